"""Issue 27: `bgprompt train --data BAG` learns a prompt from RGB-D recordings, supervised by the sensor only.

The loss never sees a masked-out reading; ground truth in a bag changes validation figures only; a bag with no
usable pixel is a clear error; bad bags (missing topics, other sizes, cut files) fail clearly or skip and count."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bgprompt_core.method.config import ConfigError
from bgprompt_core.messages.bag_frames import TOPICS, typestore
from bgprompt_ros.bags.make import image_message, make_bag
from bgprompt_training.data.bags import BagReadConfig, bag_samples, object_sample
from bgprompt_training.data.trust import TrustConfig, trusted_pixels
from bgprompt_training.render.generate import RenderConfig
from bgprompt_training.render.store import render_dataset
from bgprompt_training.sensor_loss import weighted_object_loss
from bgprompt_training.train import TrainConfig, Trainer
from scenes import box_on_table, table_image

SIZE = 56  # the tiny network's input


@pytest.fixture(scope="module")
def bag(renders, tmp_path_factory):
    out = tmp_path_factory.mktemp("bags") / "b"
    make_bag(renders, out, sensor="d435-like")
    return out


def rewrite(src: Path, dst: Path, change=lambda topic, msg: msg) -> Path:
    """A copy of a bag whose messages pass through ``change(topic, msg)`` (None: left out; a topic whose every
    message is left out is not in the copy)."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Writer

    ts = typestore()
    with AnyReader([src], default_typestore=ts) as reader:
        msgs = [(c.topic, c.msgtype, t, change(c.topic, reader.deserialize(raw, c.msgtype)))
                for c, t, raw in reader.messages()]
    with Writer(dst, version=9) as writer:
        conns = {}
        for topic, msgtype, t, msg in msgs:
            if msg is None:
                continue
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], t, ts.serialize_cdr(msg, msgtype))
    return dst


def arr(msg) -> np.ndarray:
    from bgprompt_core.messages.decode import image_to_array

    return image_to_array(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)


def replace_image(msg, a: np.ndarray):
    stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
    return image_message(typestore(), a, msg.encoding, stamp, msg.header.frame_id)


# --- trustworthy pixels and the loss -----------------------------------------------------------------------------
def glass_box_frame():
    """A box on a table, its sensor depth with a hole, a see-through patch, a flying pixel and an outlier."""
    h = w = 96
    K = np.array([[110.0, 0, 47.5], [0, 110.0, 47.5], [0, 0, 1]])
    scene, table, box = box_on_table(K, h, w)
    sensor = np.where(np.isfinite(scene), scene, 0).astype(np.float32)
    ys, xs = np.nonzero(box)
    cy, cx = int(ys.mean()), int(xs.mean())
    hole = np.zeros_like(box)
    hole[cy - 8:cy - 5, cx - 2:cx + 2] = True
    through = np.zeros_like(box)
    through[cy + 1:cy + 11, cx - 5:cx + 5] = True  # the table seen through the glass
    outlier = np.zeros_like(box)
    outlier[cy - 2:cy, cx + 5:cx + 7] = True  # a blob 2.5 cm off its neighbourhood
    flying = np.zeros_like(box)
    flying[cy - 6, cx + 8] = True  # a flying pixel 8 cm behind the surface: a depth edge
    sensor[hole] = 0
    sensor[through] = table[through]
    sensor[outlier] += 0.025
    sensor[flying] += 0.08
    rgb = table_image(K, h, w, table, box, glass=True)
    return rgb, K, box, sensor, np.where(np.isfinite(scene), scene, np.nan).astype(np.float32), \
        {"hole": hole & box, "see_through": through & box, "inconsistent": outlier & box, "edge": flying & box}


def test_trusted_pixels_leave_out_holes_edges_see_through_and_outliers():
    rgb, K, box, sensor, truth, bad = glass_box_frame()
    trusted, counts = trusted_pixels(sensor, box, K, box)
    assert not (trusted & ~box).any()
    for reason, pixels in bad.items():
        assert not (trusted & pixels).any(), reason
    for reason in ("hole", "see_through", "edge"):  # a pixel counts under the first rule that rejects it
        assert counts[reason] > 0, (reason, counts)
    # the neighbourhood rule alone (no depth edges) still catches the blob and the flying pixel
    alone, c = trusted_pixels(sensor, box, K, box, TrustConfig(edge_jump=10.0, border=0, edge_grow=0))
    assert not (alone & (bad["inconsistent"] | bad["edge"])).any() and c["inconsistent"] >= 5
    # without the see-through test the patch of table behind the glass would be trusted in its middle
    blind, _ = trusted_pixels(sensor, box, K, box, TrustConfig(see_through_tol=0, min_plane_inliers=10**6))
    assert (blind & bad["see_through"]).any()
    assert counts["trusted"] >= 100, counts  # the clean inside of the box stays (a 2 px silhouette band goes)


def tiny_prompted(tiny_model_dir):
    from bgprompt_core.method.config import FourierPromptConfig
    from bgprompt_core.networks.loading import load_depth_net
    from bgprompt_core.method.model import PromptedDepth
    from bgprompt_core.method.prompts import build_prompt

    torch.manual_seed(0)
    net = load_depth_net(str(tiny_model_dir), torch.device("cpu"), local_only=True)
    prompt = build_prompt(FourierPromptConfig(height=SIZE, width=SIZE))
    return PromptedDepth(net, prompt), prompt


def loss_and_grad(model, prompt, s: dict) -> tuple[float, torch.Tensor]:
    b = {k: v[None] for k, v in s.items()}
    prompt.zero_grad(set_to_none=True)
    depth = model(b["image"], b["mask"])["depth"]
    loss, _ = weighted_object_loss(depth.float(), b["depth"], b["weight"], b["K"])
    loss.backward()
    return loss.item(), torch.cat([p.grad.reshape(-1) for p in prompt.parameters()]).clone()


def test_corrupting_masked_out_readings_changes_neither_loss_nor_gradients(tiny_model_dir):
    rgb, K, box, sensor, truth, _ = glass_box_frame()
    trusted, _ = trusted_pixels(sensor, box, K, box)
    model, prompt = tiny_prompted(tiny_model_dir)
    s = object_sample(rgb, K, box, sensor, trusted, None, SIZE)
    assert 32 < s["weight"].sum() < (s["mask"] > 0.5).sum()
    loss, grad = loss_and_grad(model, prompt, s)
    rng = np.random.default_rng(1)
    # in the frame: every reading the rules left out (holes, edges, see-through, outliers, off the object)
    noisy = sensor.copy()
    out = ~trusted
    noisy[out] = rng.choice([0.0, np.nan, np.inf, 1e6, -3.0], out.sum()) + rng.uniform(0, 2, out.sum())
    s2 = object_sample(rgb, K, box, noisy, trusted, None, SIZE)
    assert torch.equal(s2["weight"], s["weight"]) and torch.equal(s2["depth"], s["depth"])
    # in the sample: every pixel outside the loss's mask
    s3 = dict(s2)
    off = s["weight"] < 0.5
    s3["depth"] = torch.where(off, torch.from_numpy(rng.uniform(-5, 50, off.shape).astype(np.float32)), s["depth"])
    near = torch.nn.functional.max_pool2d(s["weight"][None, None], 3, 1, 1)[0, 0] > 0.5
    s3["depth"][near & off] = float("nan")  # NaN right beside the loss's pixels (the smoothing's reach)
    for corrupt in (s2, s3):
        l2, g2 = loss_and_grad(model, prompt, corrupt)
        assert l2 == loss and torch.equal(g2, grad)
    # the test has power: one trusted reading moved changes both
    s4 = dict(s)
    on = torch.nonzero(s["weight"] > 0.5)[len(torch.nonzero(s["weight"] > 0.5)) // 2]
    s4["depth"] = s["depth"].clone()
    s4["depth"][on[0], on[1]] *= 1.2
    l4, g4 = loss_and_grad(model, prompt, s4)
    assert l4 != loss and not torch.equal(g4, grad)


# --- training from bags --------------------------------------------------------------------------------------------
def train_cfg(tiny_model_dir, data, out, **kw) -> TrainConfig:
    base = dict(model=str(tiny_model_dir), data=[str(d) for d in data], out=str(out), steps=4, batch=2,
                val_every=2, local_only=True, device="cpu")
    return TrainConfig(**{**base, **kw})


def final_state(out) -> dict:
    state = Path(str(out) + ".state")
    step = state / (state / "LATEST").read_text().strip()
    return {k: v for k, v in load_file(str(step / "state.safetensors")).items() if k.startswith("param.")}


def test_ground_truth_in_a_bag_changes_only_the_validation_figures(bag, tmp_path, tiny_model_dir):
    def distort(topic, msg):
        return replace_image(msg, (arr(msg) * 1.7 + 0.3 * np.random.default_rng(0).random(arr(msg).shape))
                             .astype(np.float32)) if topic == TOPICS["truth"] else msg

    wrong = rewrite(bag, tmp_path / "wrong", distort)
    none = rewrite(bag, tmp_path / "none", lambda topic, msg: None if topic == TOPICS["truth"] else msg)
    runs = {}
    for name, b in (("truth", bag), ("wrong", wrong), ("none", none)):
        t = Trainer(train_cfg(tiny_model_dir, [b], tmp_path / f"{name}.safetensors", val=[str(b)]))
        r = t.run()
        runs[name] = ([h["loss"] for h in r["history"]], final_state(tmp_path / f"{name}.safetensors"),
                      [h["val"]["si_rmse"] for h in r["history"] if "val" in h], t.supervision)
    losses, state, val, sup = runs["truth"]
    for name in ("wrong", "none"):
        assert runs[name][0] == losses, name  # the same losses, step by step
        assert all(torch.equal(runs[name][1][k], v) for k, v in state.items()), name  # the same prompt
        assert {k: v for k, v in runs[name][3].items() if k != "bags"} == \
            {k: v for k, v in sup.items() if k != "bags"}
        assert runs[name][2] != val, name  # validation against another reference: other figures
    assert sup["supervised_pixels"] > 0 and sup["objects"] == 6


def test_a_bag_without_usable_pixels_is_a_clear_error_not_a_nan_prompt(bag, tmp_path, tiny_model_dir):
    from bgprompt_training.cli import main

    holes = rewrite(bag, tmp_path / "holes", lambda topic, msg: replace_image(msg, np.zeros_like(arr(msg)))
                    if topic == TOPICS["depth"] else msg)
    out = tmp_path / "p.safetensors"
    with pytest.raises(ConfigError, match="no object pixel with a trustworthy sensor reading.*hole"):
        Trainer(train_cfg(tiny_model_dir, [holes], out))
    assert not out.exists()
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(holes), "--out", str(out), "--steps", "2",
                 "--local-only"]) == 2
    assert not out.exists()


def test_a_missing_topic_fails_before_training(bag, tmp_path, tiny_model_dir):
    nodepth = rewrite(bag, tmp_path / "nodepth", lambda topic, msg: None if topic == TOPICS["depth"] else msg)
    with pytest.raises(ConfigError, match="no depth topic"):
        bag_samples(str(nodepth), SIZE, BagReadConfig(), progress=False)
    with pytest.raises(ConfigError, match="no mask topic"):
        bag_samples(str(bag), SIZE, BagReadConfig(mask_topic="/nowhere"), progress=False)
    with pytest.raises(ConfigError, match="not a readable ROS 2 bag"):
        bag_samples(str(tmp_path), SIZE, BagReadConfig(), progress=False)


def test_frames_of_other_sizes_are_skipped_and_counted(bag, tmp_path):
    seen = {"n": 0}

    def crop(topic, msg):
        if topic != TOPICS["depth"]:
            return msg
        seen["n"] += 1
        return replace_image(msg, np.ascontiguousarray(arr(msg)[:32])) if seen["n"] <= 2 else msg

    cropped = rewrite(bag, tmp_path / "cropped", crop)
    samples, stats = bag_samples(str(cropped), SIZE, BagReadConfig(), progress=False)
    assert stats.skipped_frames == {"depth is 64x32, the image is 64x64": 2}
    assert stats.frames == 4 and len(samples) == 4


def test_a_truncated_bag_fails_clearly_and_a_corrupt_message_is_skipped_and_counted(bag, tmp_path, tiny_model_dir):
    import shutil

    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Writer

    shutil.copytree(bag, tmp_path / "cut")
    mcap = next((tmp_path / "cut").glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])  # an mcap cut short has no footer: rosbags cannot open it
    with pytest.raises(ConfigError, match=r"cut: not a readable ROS 2 bag"):
        Trainer(train_cfg(tiny_model_dir, [tmp_path / "cut"], tmp_path / "p.safetensors"))
    with AnyReader([bag], default_typestore=typestore()) as reader, Writer(tmp_path / "bad", version=9) as writer:
        conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=typestore()) for c in reader.connections}
        depth = 0
        for conn, t, raw in reader.messages():
            if conn.topic == TOPICS["depth"]:
                depth += 1
                raw = bytes(raw[:40]) if depth == 3 else raw  # the third depth image is cut mid-message
            writer.write(conns[conn.topic], t, bytes(raw))
    samples, stats = bag_samples(str(tmp_path / "bad"), SIZE, BagReadConfig(), progress=False)
    assert stats.corrupt_messages == 1 and stats.frames == 5 and len(samples) == 5 and stats.error is None


def test_stride_and_ranks_share_out_the_frames(bag):
    everything, _ = bag_samples(str(bag), SIZE, BagReadConfig(), progress=False)
    strided, st = bag_samples(str(bag), SIZE, BagReadConfig(stride=2), progress=False)
    assert [i for i, _, _ in strided] == [0, 2, 4] and st.frames == 3
    parts = [bag_samples(str(bag), SIZE, BagReadConfig(), rank=r, world=2, progress=False)[0] for r in (0, 1)]
    assert sorted(i for p in parts for i, _, _ in p) == [i for i, _, _ in everything]
    assert not {i for i, _, _ in parts[0]} & {i for i, _, _ in parts[1]}


def test_bags_and_render_folders_mix_and_pnet_trains(bag, renders, tmp_path, tiny_model_dir):
    t = Trainer(train_cfg(tiny_model_dir, [bag, renders], tmp_path / "pn.safetensors", prompt="pnet",
                          pnet_downs=3, pnet_channels=8, val=[str(bag)]))
    r = t.run()
    assert all(np.isfinite(h["loss"]) for h in r["history"]) and (tmp_path / "pn.safetensors").is_file()
    assert len(t.train_data.sets[0]) == 6 and len(t.train_data.sets[1]) == 6


def test_init_shipped_starts_from_the_shipped_prompt(bag, tmp_path):
    from bgprompt_core.method.checkpoint import load_prompt
    from bgprompt_core.runtime.build import SHIPPED_PROMPTS

    t = Trainer(TrainConfig(model="mini", data=[str(bag)], out=str(tmp_path / "w.safetensors"), init="shipped",
                            steps=1, local_only=True, device="cpu"))
    shipped, _ = load_prompt(SHIPPED_PROMPTS["mini"]["1bg"])
    assert all(torch.equal(v, shipped.state_dict()[k]) for k, v in t.prompt.state_dict().items())
    with pytest.raises(ConfigError, match="is a 1bg prompt, --prompt is pnet"):
        Trainer(TrainConfig(model="mini", data=[str(bag)], out=str(tmp_path / "x"), init="tabletop", prompt="pnet",
                            local_only=True, device="cpu"))


def test_two_ranks_equal_one_process_and_a_killed_run_resumes(bag, tmp_path, tiny_model_dir):
    """Bag frames sharded over 2 torchrun ranks give the 1-process run (same global batch); a run killed
    from outside after its step-3 state resumes to the same end."""
    from test_distributed import BIN, rel_diff, single, state, torchrun
    from test_train_eval import kill_once_saved

    def args(out, *extra):
        return ["train", "--model", str(tiny_model_dir), "--data", str(bag), "--val", str(bag), "--out", str(out),
                "--steps", "6", "--batch", "4", "--val-every", "3", "--lr", "0.05", "--local-only", *extra]

    one, two, part = tmp_path / "one", tmp_path / "two", tmp_path / "part"
    ran = single(args(one))
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "supervised by the sensor:" in ran.stdout
    ran = torchrun(2, args(two, "--logdir", str(tmp_path / "tb")))
    assert ran.returncode == 0, ran.stderr[-2000:]
    with open(tmp_path / "killed.err", "w") as err:  # killed from outside once it says its step-3 state is on disk
        proc = subprocess.Popen([str(BIN / "bgprompt"), *args(part)], stdout=subprocess.PIPE, stderr=err)
        kill_once_saved(proc, 3)
    assert proc.returncode == -9
    resumed = single(args(part, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (m1, t1), (m2, t2), (m3, t3) = state(one), state(two), state(part)
    for m, t in ((m2, t2), (m3, t3)):
        assert np.allclose([h["loss"] for h in m["history"]], [h["loss"] for h in m1["history"]], rtol=1e-4)
        assert rel_diff(t["param.spectrum"], t1["param.spectrum"]) < 1e-3
        assert m["supervision"] == m1["supervision"]  # every rank's share of the frames was gathered
    assert m2["distributed"]["world_size"] == 2


def test_bag_make_sensor_stored_writes_the_renders_own_harsh_sensor(tmp_path):
    """The training bags of docs/grasp/bag_trained.md: `bag make --sensor stored` keeps a tabletop render's own
    sensor (harsh-stereo here); before, any preset but d435-like was silently re-simulated as d435-like."""
    from bgprompt_training.data.rendered import RenderedDataset

    cfg = RenderConfig(kind="tabletop", size=64, seed=5, families=("primitive",), sensor="harsh-stereo")
    render_dataset(cfg, tmp_path / "r", 2, backend="numpy", progress=False)
    make_bag(tmp_path / "r", tmp_path / "b", sensor="stored")
    from rosbags.highlevel import AnyReader

    with AnyReader([tmp_path / "b"], default_typestore=typestore()) as reader:
        depth = [arr(reader.deserialize(raw, c.msgtype)) for c, _, raw in reader.messages()
                 if c.topic == TOPICS["depth"]]
    stored = RenderedDataset(tmp_path / "r").arrays(0, ("sensor_depth",))["sensor_depth"]
    assert np.array_equal(depth[0], np.round(stored * 1000).astype(np.uint16))
