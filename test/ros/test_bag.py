"""Bags: make round-trips through rosbags, eval metrics vs an independent computation, corrupt bags,
and (ROS) live replay plus node output equal to bag eval's output bag."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bgprompt_core.messages.bag_frames import TOPICS, typestore
from bgprompt_ros import conversions
from bgprompt_ros.bags.evaluate import Combo, eval_bag
from bgprompt_ros.bags.make import image_message, make_bag
from bgprompt_ros.bags.report import BagError
from bgprompt_training.render.generate import RenderConfig
from bgprompt_training.render.store import render_dataset
from full_disk import KINDS, full_disk
from proc_lines import wait_for_line

BGPROMPT = str(Path(sys.executable).parent / "bgprompt")


@pytest.fixture(scope="module")
def renders128(tmp_path_factory):
    root = tmp_path_factory.mktemp("bagdata128")
    render_dataset(RenderConfig(size=128, seed=5), root, 2, backend="numpy", progress=False)
    return root


def read_bag(path):
    from rosbags.highlevel import AnyReader

    out = {}
    with AnyReader([Path(path)], default_typestore=typestore()) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return out


def arr(msg):
    return conversions.image_to_array(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_make_round_trips(renders, tmp_path, storage):
    info = make_bag(renders, tmp_path / "b", storage, rate=10, sensor="none")
    assert info["frames"] == 6
    msgs = read_bag(tmp_path / "b")
    assert set(msgs) == set(TOPICS.values())
    with np.load(renders / "shard-00000.npz") as f:
        rgb, depth, mask, K = f["rgb"], f["depth"], f["mask"], f["K"]
    for i in range(6):
        stamps = {topic: msgs[topic][i][0] for topic in msgs}
        assert len(set(stamps.values())) == 1  # consistent stamps across topics
        img = msgs[TOPICS["image"]][i][1]
        assert img.header.frame_id == "camera_color_optical_frame" and img.encoding == "rgb8"
        assert np.array_equal(arr(img), rgb[i])
        assert np.array_equal(arr(msgs[TOPICS["mask"]][i][1]) > 0, mask[i])
        d = conversions.to_sensor_depth("16UC1", arr(msgs[TOPICS["depth"]][i][1]))
        assert np.allclose(d[depth[i] > 0], depth[i][depth[i] > 0], atol=6e-4) and np.isnan(d[depth[i] == 0]).all()
        assert np.allclose(np.asarray(msgs[TOPICS["camera_info"]][i][1].k).reshape(3, 3), K[i])
    ts = [t for t, _ in msgs[TOPICS["image"]]]
    assert np.allclose(np.diff(ts), 1e8)
    with pytest.raises(FileExistsError):
        make_bag(renders, tmp_path / "b", storage)


def test_sensor_holes_are_realistic(renders, tmp_path):
    """The bag's depth has the d435-like camera's holes and no others, counted against an independent computation
    on the ground truth: every pixel that is not at a depth edge, in the stereo shadow, dark or out of range reads
    within 5 sigma of the truth; dark surfaces (luminance < 0.12) lose the preset's 60%."""
    from bgprompt_core.evaluation import sensor_model as sm

    import shutil

    p = sm.PRESETS["d435-like"]
    dim = tmp_path / "dim"  # the renders with half the frames 4x darker: dark surfaces to count
    shutil.copytree(renders, dim)
    with np.load(renders / "shard-00000.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["rgb"][:3] //= 4
    np.savez_compressed(dim / "shard-00000.npz", **arrays)
    make_bag(dim, tmp_path / "h", sensor="d435-like")
    msgs = read_bag(tmp_path / "h")
    mask, depth, rgb, Ks = arrays["mask"], arrays["depth"].astype(np.float64), arrays["rgb"], arrays["K"]
    dark_lost, dark_n = 0, 0
    for i, (_, m) in enumerate(msgs[TOPICS["depth"]]):
        got = arr(m).astype(np.float64) / 1000
        z = depth[i]
        edge = sm.depth_edges(z, p.edge_jump)
        shadow = sm.stereo_shadow(z, Ks[i], p.baseline)
        dark = (rgb[i].astype(np.float64).mean(-1) / 255 < 0.12) & (z > 0)
        in_range = (z > p.min_range + 0.01) & (z < p.max_range - 0.01)
        plain = mask[i] & ~edge & ~shadow & ~dark & in_range
        assert (got[plain] > 0).all()  # no hole where the camera has no reason for one
        assert (np.abs(got[plain] - z[plain]) <= 5 * p.sigma(z[plain]) + 0.0005).all()
        assert (got[mask[i] & shadow] == 0).all() and (got[mask[i] & ~in_range & (z > 0)] == 0).all()
        d = dark & ~edge & ~shadow & in_range
        dark_lost += int((got[d] == 0).sum())
        dark_n += int(d.sum())
    assert dark_n > 1000 and dark_lost / dark_n == pytest.approx(p.dark_holes, abs=0.05)


def test_bag_eval_metrics_match_an_independent_computation(renders, tmp_path, tiny_model_dir):
    make_bag(renders, tmp_path / "in", sensor="d435-like")
    combo = Combo("tiny", {"model": str(tiny_model_dir), "prompt": "none"})
    summary = eval_bag(tmp_path / "in", [combo], out_dir=tmp_path / "out", json_path=tmp_path / "s.json",
                       out_bag=tmp_path / "pred", progress=False)
    assert summary["frames"] == 6 and summary["error"] is None
    inp, pred = read_bag(tmp_path / "in"), read_bag(tmp_path / "pred")
    assert [t for t, _ in pred["/object_depth/image"]] == [t for t, _ in inp[TOPICS["image"]]]
    for i, row in enumerate(summary["per_frame"]["tiny"]):
        p = arr(pred["/object_depth/image"][i][1])
        ref = conversions.to_sensor_depth("32FC1", arr(inp[TOPICS["truth"]][i][1]))  # the reference is the ground truth
        obj = arr(inp[TOPICS["mask"]][i][1]) > 0
        ok = obj & np.isfinite(ref) & np.isfinite(p)
        g = ref[ok].astype(np.float64) * 5 / ref[ok].mean()
        q = p[ok].astype(np.float64)
        s = (q * g).sum() / (q * q).sum()
        assert row["si_rmse"] == pytest.approx(np.sqrt(np.mean((s * q - g) ** 2)), rel=1e-3)
        assert row["coverage"] == pytest.approx((obj & np.isfinite(p)).sum() / obj.sum())
        cloud = pred["/object_points"][i][1]
        assert cloud.header.stamp == inp[TOPICS["image"]][i][1].header.stamp
    for name in ("summary.md", "per_frame.csv", "per_frame.png", "worst_frames.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 6


def test_truncated_bag_is_a_clear_error_with_partial_results(renders, tmp_path, tiny_model_dir):
    make_bag(renders, tmp_path / "in", sensor="none")
    mcap = next((tmp_path / "in").glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])
    combo = Combo("tiny", {"model": str(tiny_model_dir), "prompt": "none"})
    with pytest.raises(BagError, match=r"after \d+ evaluated frame"):
        eval_bag(tmp_path / "in", [combo], json_path=tmp_path / "partial.json", progress=False)
    partial = json.loads((tmp_path / "partial.json").read_text())
    assert partial["error"] and partial["frames"] < 6


def test_eval_never_writes_into_the_input_bag(renders, tmp_path, tiny_model_dir):
    make_bag(renders, tmp_path / "in", sensor="none")
    with pytest.raises(ValueError, match="never modified"):
        eval_bag(tmp_path / "in", [Combo("t", {"model": str(tiny_model_dir), "prompt": "none"})],
                 out_bag=tmp_path / "in", progress=False)


@pytest.mark.ros
def test_live_replay_and_node_output_equal_bag_eval(renders, tmp_path, tiny_model_dir):
    """node + bag play + bag record, then compare with bag eval's output bag for the same input."""
    make_bag(renders, tmp_path / "in", sensor="none")
    params = tmp_path / "p.yaml"
    params.write_text(f"/**:\n  ros__parameters:\n    model: {tiny_model_dir}\n    prompt: none\n"
                      f"    sub_reliability: reliable\n    queue_size: 30\n")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOG_DIR": str(tmp_path / "log")}
    remap = ["-r", f"image:={TOPICS['image']}", "-r", f"camera_info:={TOPICS['camera_info']}",
             "-r", f"mask:={TOPICS['mask']}"]
    node = subprocess.Popen([str(Path(sys.executable).parent / "object_depth_node"), "--ros-args",
                             "--params-file", str(params), *remap], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    rec = subprocess.Popen([BGPROMPT, "bag", "record", "--out", str(tmp_path / "live"), "--expect", "/object_points=6",
                            "--duration", "120", "--wait-node", "object_depth", "--wait-timeout", "120",
                            "--topics", "/object_points:sensor_msgs/msg/PointCloud2"], env=env, stdout=subprocess.PIPE,
                           text=True)
    try:
        wait_for_line(rec.stdout, "bag record: ready")  # blocks until the recorder says so (or exits)
        # the node is active and matched on its inputs: nothing is published before it listens
        play = subprocess.run([BGPROMPT, "bag", "play", str(tmp_path / "in"), "--rate", "0.25",
                               "--wait-node", "object_depth", "--wait-timeout", "120",
                               "--topics", TOPICS["image"], TOPICS["camera_info"], TOPICS["mask"]],
                              env=env, capture_output=True, text=True, timeout=300)
        assert play.returncode == 0 and "published 18 messages" in play.stdout, play.stderr
        rec_out, _ = rec.communicate(timeout=180)
        assert "/object_points x" in rec_out
    finally:
        node.send_signal(2)
        node.wait(timeout=10)
        if rec.poll() is None:
            rec.kill()
    live = read_bag(tmp_path / "live")["/object_points"]
    eval_bag(tmp_path / "in", [Combo("tiny", {"model": str(tiny_model_dir), "prompt": "none"})],
             out_bag=tmp_path / "pred", progress=False)
    offline = read_bag(tmp_path / "pred")["/object_points"]
    assert len(offline) == 6
    # the node serves latest-only: under heavy load it may drop a frame; every frame it did publish must equal
    # bag eval's output for the same stamp
    assert len(live) >= 4
    by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for _, m in offline}
    for _, a in live:
        b = by_stamp[(a.header.stamp.sec, a.header.stamp.nanosec)]
        assert a.point_step == b.point_step and a.header.frame_id == b.header.frame_id
        pa = np.frombuffer(bytes(a.data), np.float32)
        pb = np.frombuffer(bytes(b.data), np.float32)
        assert np.allclose(pa, pb, rtol=1e-5, equal_nan=True)


@pytest.mark.ros
def test_play_delivers_every_message_in_order(renders, tmp_path):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    make_bag(renders, tmp_path / "in", sensor="none")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    rclpy.init()
    node = rclpy.create_node("bgprompt_play_probe")
    got = []
    node.create_subscription(Image, TOPICS["image"], lambda m: got.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec),
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    play = subprocess.Popen([BGPROMPT, "bag", "play", str(tmp_path / "in"), "--rate", "5", "--wait-subscribers", "1",
                             "--topics", TOPICS["image"]], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and (play.poll() is None or len(got) < 6):
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown()
    assert play.returncode == 0
    assert len(got) == 6 and got == sorted(got) and np.allclose(np.diff(got), 1e8)


def test_a_corrupt_message_is_counted_and_skipped_and_the_rest_of_the_bag_is_evaluated(renders, tmp_path,
                                                                                        tiny_model_dir):
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Writer

    make_bag(renders, tmp_path / "in", sensor="none")
    with AnyReader([tmp_path / "in"], default_typestore=typestore()) as reader, \
            Writer(tmp_path / "bad", version=9) as writer:
        conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=typestore()) for c in reader.connections}
        images = 0
        for conn, t, raw in reader.messages():
            if conn.topic == TOPICS["image"]:
                images += 1
                if images == 3:
                    raw = bytes(raw[:40])  # truncated CDR: the third image cannot be decoded
            writer.write(conns[conn.topic], t, bytes(raw))
    summary = eval_bag(tmp_path / "bad", [Combo("tiny", {"model": str(tiny_model_dir), "prompt": "none"})],
                       progress=False)
    assert summary["error"] is None and summary["corrupt_messages"] == 1
    assert summary["frames"] == 5  # every other frame was evaluated


def test_a_looped_recording_is_evaluated_whole_and_its_stamp_jump_reported(renders, tmp_path, tiny_model_dir):
    """The reported defect: a bag whose stamps jump back (a recording of `bag play --loop`) reported half its
    frames, 0 skipped and no error. Every frame is evaluated, and the jump is counted and named."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Writer

    make_bag(renders, tmp_path / "in", sensor="none")
    with AnyReader([tmp_path / "in"], default_typestore=typestore()) as reader, \
            Writer(tmp_path / "looped", version=9) as writer:
        conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=typestore()) for c in reader.connections}
        messages = list(reader.messages())
        end = max(t for _, t, _ in messages)
        for loop in range(2):  # the same messages again, header stamps unchanged, recorded after the first pass
            for conn, t, raw in messages:
                writer.write(conns[conn.topic], t + loop * (end + 1), bytes(raw))
    out = tmp_path / "eval"
    summary = eval_bag(tmp_path / "looped", [Combo("tiny", {"model": str(tiny_model_dir), "prompt": "none"})],
                       out_dir=out, progress=False)
    assert summary["error"] is None and summary["frames"] == 12 and summary["skipped_frames"] == 0
    assert summary["stamp_jumps"] == 1 and summary["last_stamp_jump_s"] < 0
    assert "went back in time 1 time(s)" in (out / "summary.md").read_text()


def _repeated(renders, root: Path, times: int) -> Path:
    """The renders' shard listed ``times`` times: a longer recording of the same frames, nothing re-rendered."""
    manifest = json.loads((renders / "manifest.json").read_text())
    out = root / f"renders_x{times}"
    out.mkdir()
    for shard in manifest["shards"]:
        (out / shard["file"]).symlink_to(renders / shard["file"])
    manifest["shards"] = manifest["shards"] * times
    manifest["count"] *= times
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _kept(stderr: str) -> int:
    import re

    found = re.search(r"closed with the (\d+) message\(s\)", stderr)
    assert found, stderr
    return int(found.group(1))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("kind", KINDS)
def test_bag_make_on_a_full_disk_stops_clearly_and_keeps_a_readable_bag(renders, tmp_path, kind, storage):
    """A full disk (a small tmpfs) or a refused write (a file size limit) ends `bag make` with an error line, and the
    frames written before are a closed bag that rosbags reads back exactly and bag eval's reader cuts into frames."""
    from bgprompt_core.messages.bag_frames import open_reader, resolve_topics, synced_sets

    data = _repeated(renders, tmp_path, 30)  # 180 frames, ~7 MiB
    with full_disk(kind, tmp_path, 7 << 20 if kind == "tmpfs" else 5 << 20) as (disk, preexec):
        proc = subprocess.run([BGPROMPT, "bag", "make", "--data", str(data), "--out", str(disk / "b"), "--storage",
                               storage, "--sensor", "none"], capture_output=True, text=True, timeout=300,
                              preexec_fn=preexec)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert "bgprompt bag: error:" in proc.stderr and "is readable" in proc.stderr, proc.stderr
        kept = _kept(proc.stderr)
        files = sorted(p.name for p in (disk / "b").iterdir())  # the reserve is gone, nothing half-written is left
        assert files == sorted(["metadata.yaml", "b.mcap" if storage == "mcap" else "b.db3"])
        msgs = read_bag(disk / "b")
        assert 0 < sum(len(v) for v in msgs.values()) == kept < 180 * 5
        with np.load(renders / "shard-00000.npz") as f:
            rgb = f["rgb"]
        images = msgs[TOPICS["image"]]
        assert len(images) >= 10
        for i, (t, img) in enumerate(images):  # what was kept is the recording's first frames, exactly
            assert t == 1_700_000_000 * 10**9 + i * 10**8 and np.array_equal(arr(img), rgb[i % 6])
        with open_reader(disk / "b") as reader:
            names = resolve_topics(reader, {k: None for k in ("image", "camera_info", "mask", "depth")})
            sets = list(synced_sets(reader, names, ["image", "camera_info", "mask", "depth"]))
        assert len(sets) == min(len(v) for v in msgs.values())


def _rewrite(src: Path, dst: Path, change) -> None:
    """Copy a bag message by message; ``change(topic, msgtype, index on its topic, msg)`` returns (msgtype, msg) to
    write instead, or None to write the original."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Writer

    ts = typestore()
    with AnyReader([src], default_typestore=ts) as reader, Writer(dst, version=9) as writer:
        conns, seen = {}, {}
        for conn, t, raw in reader.messages():
            i = seen[conn.topic] = seen.get(conn.topic, -1) + 1
            msg = reader.deserialize(raw, conn.msgtype)
            msgtype, msg = change(conn.topic, conn.msgtype, i, msg) or (conn.msgtype, msg)
            if (conn.topic, msgtype) not in conns:
                conns[conn.topic, msgtype] = writer.add_connection(conn.topic, msgtype, typestore=ts)
            writer.write(conns[conn.topic, msgtype], t, ts.serialize_cdr(msg, msgtype))


def _compressed(msg, ext: str, data: bytes | None = None):
    import cv2

    C = typestore().types["sensor_msgs/msg/CompressedImage"]
    if data is None:
        data = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(arr(msg)), cv2.COLOR_RGB2BGR))[1].tobytes()
    return "sensor_msgs/msg/CompressedImage", C(header=msg.header, format=f"rgb8; {ext[1:]} compressed bgr8",
                                                data=np.frombuffer(data, np.uint8))


def test_an_unusable_frame_is_skipped_with_its_reason_and_the_rest_of_the_bag_is_evaluated(renders, tmp_path,
                                                                                            tiny_model_dir):
    """Truth or depth at another size than the image, colour that does not decode: that frame is skipped, counted
    under its reason, and every other frame is evaluated (it used to stop the whole bag as if it were corrupt)."""
    make_bag(renders, tmp_path / "in", sensor="none")
    small = lambda m: image_message(typestore(), arr(m)[::2, ::2].copy(), m.encoding, 0)  # noqa: E731

    def change(topic, msgtype, i, msg):
        if topic == TOPICS["truth"] and i == 1:
            return msgtype, type(msg)(**{**small(msg).__dict__, "header": msg.header})
        if topic == TOPICS["depth"] and i == 2:
            return msgtype, type(msg)(**{**small(msg).__dict__, "header": msg.header})
        if topic == TOPICS["image"] and i == 3:
            return _compressed(msg, ".png", b"\x89PNG\r\n\x1a\n" + bytes(40))  # a PNG whose data is garbage
        if topic == TOPICS["image"] and i == 4:  # a few bytes claiming 60000 x 60000 pixels: never decoded
            ihdr = b"\0\0\0\rIHDR" + (60000).to_bytes(4, "big") * 2
            return _compressed(msg, ".png", b"\x89PNG\r\n\x1a\n" + ihdr + bytes(9))
        if topic == TOPICS["image"]:
            return _compressed(msg, ".png")  # the others decode exactly
        return None

    _rewrite(tmp_path / "in", tmp_path / "bad", change)
    combo = Combo("tiny", {"model": str(tiny_model_dir), "prompt": "none"})
    summary = eval_bag(tmp_path / "bad", [combo], out_dir=tmp_path / "out", progress=False)
    assert summary["error"] is None and summary["frames"] == 2 and summary["skipped_frames"] == 4
    reasons = summary["skip_reasons"]
    assert reasons == {"ground truth is 32x32, the image is 64x64": 1, "depth is 32x32, the image is 64x64": 1,
                       "compressed image ('rgb8; png compressed bgr8', 48 bytes) is corrupt: its header says 0x0 "
                       "pixels": 1, "compressed image claims 60000x60000 pixels (limit 4096x4096)": 1}, reasons
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "ground truth is 32x32, the image is 64x64" in text and "4 frame(s) skipped" in text


def test_compressed_colour_is_evaluated_like_the_raw_image(renders, tmp_path, tiny_model_dir):
    """CompressedImage colour (image_transport's `compressed`): PNG gives exactly the raw bag's figures, JPEG runs."""
    make_bag(renders, tmp_path / "raw", sensor="none")
    for ext in (".png", ".jpg"):
        _rewrite(tmp_path / "raw", tmp_path / ext[1:],
                 lambda topic, t, i, m, ext=ext: _compressed(m, ext) if topic == TOPICS["image"] else None)
    runs = {name: eval_bag(tmp_path / name, [Combo("tiny", {"model": str(tiny_model_dir), "prompt": "none"})],
                           progress=False) for name in ("raw", "png", "jpg")}
    raw, png, jpg = (runs[n]["per_frame"]["tiny"] for n in ("raw", "png", "jpg"))
    assert len(raw) == len(png) == len(jpg) == 6
    for a, b in zip(raw, png):
        assert a["si_rmse"] == b["si_rmse"] and a["coverage"] == b["coverage"]
    assert all(np.isfinite(r["si_rmse"]) for r in jpg)


def test_a_topic_of_the_wrong_type_is_a_config_error_before_reading(renders, tmp_path, tiny_model_dir):
    from bgprompt_core.method.config import ConfigError

    make_bag(renders, tmp_path / "in", sensor="none")
    combo = Combo("tiny", {"model": str(tiny_model_dir), "prompt": "none"})
    _rewrite(tmp_path / "in", tmp_path / "cdepth",
             lambda topic, t, i, m: _compressed(m, ".png") if topic == TOPICS["depth"] else None)
    with pytest.raises(ConfigError, match=r"depth topic /camera/aligned_depth_to_color/image_raw carries "
                                          r"sensor_msgs/msg/CompressedImage; depth is read from sensor_msgs/msg/Image"):
        eval_bag(tmp_path / "cdepth", [combo], json_path=tmp_path / "s.json", progress=False)
    assert not (tmp_path / "s.json").exists()  # refused before reading: no partial results
    # a second type on the colour topic (another publisher): its messages are left out and counted
    S = typestore().types["std_msgs/msg/String"]
    _rewrite(tmp_path / "in", tmp_path / "two", lambda topic, t, i, m: ("std_msgs/msg/String", S(data="x"))
             if topic == TOPICS["image"] and i == 0 else None)
    summary = eval_bag(tmp_path / "two", [combo], progress=False)
    assert summary["left_out_messages"] == {f"{TOPICS['image']} (std_msgs/msg/String)": 1}
    assert summary["frames"] == 5 and summary["error"] is None


def test_eval_out_bag_on_a_full_disk_is_closed_readable_and_the_evaluation_goes_on(renders128, tmp_path,
                                                                                   tiny_model_dir):
    """One kind of full disk suffices here (the writer's two paths are the bag make test's): a file size limit."""
    make_bag(_repeated(renders128, tmp_path, 6), tmp_path / "in", sensor="none")  # 12 frames of 128 x 128
    with full_disk("fsize", tmp_path, 5 << 20) as (disk, preexec):
        # organized clouds (128 x 128 x 32 bytes) make ~0.6 MB of output per frame: ~7 MB in all
        proc = subprocess.run([BGPROMPT, "bag", "eval", str(tmp_path / "in"), "--model", str(tiny_model_dir),
                               "--prompt", "none", "--no-baseline", "--cloud-mode", "organized", "--out-bag",
                               str(disk / "pred"), "--json", str(tmp_path / "s.json")], capture_output=True,
                              text=True, timeout=600, preexec_fn=preexec, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert "--out-bag stopped" in proc.stderr and "is readable" in proc.stderr, proc.stderr
        summary = json.loads((tmp_path / "s.json").read_text())
        assert summary["frames"] == 12 and summary["error"] is None  # every frame was evaluated all the same
        kept = summary["out_bag"]["frames"]
        pred = read_bag(disk / "pred")
        counts = [len(pred.get(t, [])) for t in ("/object_depth/image", "/object_depth/camera_info", "/object_points")]
        assert 0 < kept < 12 and min(counts) == kept and max(counts) <= kept + 1, counts  # whole frames, then a part
        stamps = [t for t, _ in read_bag(tmp_path / "in")[TOPICS["image"]]]
        assert [t for t, _ in pred["/object_points"]] == stamps[:kept]  # the first frames, in order


def test_summary_counts_what_failed_per_metric_beside_the_mean_of_the_rest():
    from bgprompt_ros.bags.report import summarize_rows

    inf, nan = float("inf"), float("nan")
    obj = lambda c: {"id": 1, "chamfer_mm": c, "accuracy_10mm": 50.0, "completeness_10mm": 40.0,  # noqa: E731
                     "centroid_mm": c}
    rows = [{"stamp": 1, "si_rmse": 0.1, "coverage": 1.0, "objects": [obj(2.0), obj(inf)]},
            {"stamp": 2, "si_rmse": nan, "coverage": 0.5, "objects": [obj(4.0)]},
            {"stamp": 3, "si_rmse": 0.3, "coverage": 0.0, "objects": [obj(nan)]},
            {"stamp": 4, "skipped": "empty mask", "objects_missing": 2}]
    s = summarize_rows(rows)
    assert s["frames"] == 3 and s["skipped"] == 1
    assert s["si_rmse"] == pytest.approx(0.2) and s["counts"]["si_rmse"] == {"finite": 2, "nonfinite": 1,
                                                                              "missing": 1, "of": 4}
    assert s["coverage"] == pytest.approx(0.5) and s["counts"]["coverage"]["finite"] == 3
    # cloud metrics are per object: 4 scored, 2 more in the skipped frame
    assert s["chamfer_mm"] == pytest.approx(3.0) and s["counts"]["chamfer_mm"] == {"finite": 2, "nonfinite": 2,
                                                                                   "missing": 2, "of": 6}
    assert "normal_cos" not in s and s["counts"]["normal_cos"] == {"finite": 0, "nonfinite": 0, "missing": 4, "of": 4}


def test_bag_eval_counts_what_failed_and_scores_the_raw_sensor_the_same_way(renders, tmp_path, tiny_model_dir):
    """The sensor's own depth gets a row scored like ours (against the ground truth); a frame where the sensor sees
    nothing on the object (glass) counts as a non-finite Chamfer, shown as (5/6) beside the mean of the other 5."""
    import csv

    from bgprompt_core.evaluation import cloud_metrics as cm

    make_bag(renders, tmp_path / "in", sensor="none")  # the sensor then reads the truth, in whole millimetres
    with np.load(renders / "shard-00000.npz") as f:
        masks = f["mask"]

    def blind(topic, msgtype, i, msg):  # frame 2: no reading anywhere on the object
        if topic == TOPICS["depth"] and i == 2:
            d = arr(msg).copy()
            d[masks[2]] = 0
            return msgtype, type(msg)(**{**image_message(typestore(), d, "16UC1", 0).__dict__, "header": msg.header})
        return None

    _rewrite(tmp_path / "in", tmp_path / "glass", blind)
    params = {"model": str(tiny_model_dir), "prompt": "none", "scale": "align-to-sensor"}
    summary = eval_bag(tmp_path / "glass", [Combo("tiny", params)], out_dir=tmp_path / "out",
                       json_path=tmp_path / "s.json", progress=False)
    names = [c["name"] for c in summary["combos"]]
    assert names == ["tiny", "sensor (raw depth)"]
    sensor = summary["combos"][1]
    inp = read_bag(tmp_path / "glass")
    for i, row in enumerate(summary["per_frame"]["sensor (raw depth)"]):  # the sensor row, recomputed in numpy
        d = arr(inp[TOPICS["depth"]][i][1]).astype(np.float64) / 1000
        truth = arr(inp[TOPICS["truth"]][i][1]).astype(np.float64)
        obj = masks[i]
        assert row["coverage"] == pytest.approx(((d > 0) & obj).sum() / obj.sum())
        ok = obj & (d > 0) & np.isfinite(truth)
        if i == 2:
            assert ok.sum() == 0 and row["objects"][0]["chamfer_mm"] == np.inf
            continue
        assert row["metric_rmse_m"] == pytest.approx(np.sqrt(np.mean((d[ok] - truth[ok]) ** 2)), rel=1e-4)
        # its cloud: the sensor's depth back-projected here, brute-force nearest neighbours against the truth's
        # surface samples (cloud_metrics' sampler, checked against closed forms in test_cloud_metrics)
        K = np.asarray(inp[TOPICS["camera_info"]][i][1].k).reshape(3, 3)
        v, u = np.nonzero(obj & (d > 0))
        z = d[v, u]
        pts = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
        gt = cm.surface_samples(truth.astype(np.float32), obj & np.isfinite(truth), K)
        dist = np.linalg.norm(pts[:, None] - gt[None], axis=2) * 1000
        assert row["objects"][0]["chamfer_mm"] == pytest.approx(0.5 * (dist.min(1).mean() + dist.min(0).mean()),
                                                                rel=1e-5)  # the product back-projects in float32
    assert sensor["counts"]["chamfer_mm"] == {"finite": 5, "nonfinite": 1, "missing": 0, "of": 6}
    assert sensor["chamfer_mm"] == pytest.approx(np.mean([r["objects"][0]["chamfer_mm"] for j, r in
                                                          enumerate(summary["per_frame"]["sensor (raw depth)"])
                                                          if j != 2]))
    ours = summary["combos"][0]["counts"]["chamfer_mm"]
    assert ours["of"] == 6 and ours["finite"] + ours["nonfinite"] + ours["missing"] == 6
    # the same counts in summary.md, the JSON and summary.csv
    text = (tmp_path / "out" / "summary.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| sensor (raw depth) |"))
    assert f"{sensor['chamfer_mm']:.4f} (5/6)" in line
    saved = json.loads((tmp_path / "s.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert saved["combos"][1]["counts"]["chamfer_mm"]["nonfinite"] == 1
    assert saved["per_frame"]["sensor (raw depth)"][2]["objects"][0]["chamfer_mm"] is None  # strict JSON: null
    with open(tmp_path / "out" / "summary.csv") as f:
        table = {(r["combination"], r["metric"]): r for r in csv.DictReader(f)}
    got = table["sensor (raw depth)", "chamfer_mm"]
    assert (got["unit"], got["finite"], got["nonfinite"], got["missing"]) == ("objects", "5", "1", "0")
    assert float(got["mean"]) == pytest.approx(sensor["chamfer_mm"])


def test_eval_results_that_do_not_fit_on_the_disk_are_an_error_line(renders, tmp_path, tiny_model_dir):
    """summary.md, the CSVs and the figures on a disk that refuses them: an error line naming the directory."""
    make_bag(renders, tmp_path / "in", sensor="none")
    with full_disk("fsize", tmp_path, 24 << 10) as (disk, preexec):  # files over 24 kB are refused (the figures)
        proc = subprocess.run([BGPROMPT, "bag", "eval", str(tmp_path / "in"), "--model", str(tiny_model_dir),
                               "--prompt", "none", "--no-baseline", "--out", str(disk / "out")], capture_output=True,
                              text=True, timeout=600, preexec_fn=preexec, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"the results could not all be written to {disk / 'out'}" in proc.stderr, proc.stderr
    assert "File too large" in proc.stderr and (disk / "out" / "summary.md").is_file()


def test_bag_make_where_no_bag_can_be_created_is_an_error_line(renders):
    proc = subprocess.run([BGPROMPT, "bag", "make", "--data", str(renders), "--out", "/sys/bgprompt-bag"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "/sys/bgprompt-bag: a bag cannot be created there" in proc.stderr
