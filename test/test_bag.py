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

from bgprompt_ros import conversions
from bgprompt_ros.bag import TOPICS, BagError, Combo, eval_bag, make_bag, typestore
from bgprompt_training.render.generate import RenderConfig
from bgprompt_training.render.store import render_dataset

BGPROMPT = str(Path(sys.executable).parent / "bgprompt")


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bagdata")
    render_dataset(RenderConfig(size=64, seed=3), root, 6, backend="numpy", progress=False)
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
    from bgprompt_core import sensor_model as sm

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
    assert [t for t, _ in pred["/object_depth"]] == [t for t, _ in inp[TOPICS["image"]]]
    for i, row in enumerate(summary["per_frame"]["tiny"]):
        p = arr(pred["/object_depth"][i][1])
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
        assert rec.stdout.readline().strip() == "bag record: ready"  # blocks until the recorder says so (or exits)
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
