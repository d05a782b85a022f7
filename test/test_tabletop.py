"""Tabletop scenes with a simulated RGB-D sensor: the renderer, `bag make` on them and `eval-grasp`."""
import numpy as np
import pytest

from bgprompt_core import sensor_model as sm
from bgprompt_training.render.generate import Generator, RenderConfig
from bgprompt_training.render.store import render_dataset

CFG = RenderConfig(kind="tabletop", size=96, seed=7, families=("primitive", "lathe"), materials=(1, 1, 3, 1))


@pytest.fixture(scope="module")
def tabletop(tmp_path_factory):
    out = tmp_path_factory.mktemp("tabletop")
    render_dataset(CFG, out, 6, progress=False)
    return out


def test_samples_are_deterministic_and_complete():
    a, b = Generator(CFG).sample(3), Generator(CFG).sample(3)
    for key in ("rgb", "depth", "sensor_depth", "behind", "material", "instance", "alpha", "mask"):
        assert np.array_equal(a[key], b[key]), key
    assert a["mask"].sum() >= 50 and (a["alpha"][a["mask"]] == 255).all()  # the target is a visible object
    assert (a["material"][a["alpha"] == 0] == 0).all()
    assert a["sensor_depth"].dtype == np.float32 and (a["sensor_depth"] >= 0).all()


def test_transparent_objects_read_what_lies_behind_them():
    gen = Generator(CFG)
    checked = 0
    for i in range(12):
        s = gen.sample(i)
        glass = (s["material"] == sm.TRANSPARENT) & (s["sensor_depth"] > 0)
        far = glass & (s["behind"] - s["depth"] > 0.03)  # where the surface behind is clearly farther
        if far.sum() < 20:
            continue
        checked += 1
        err_behind = np.abs(s["sensor_depth"][far] - s["behind"][far])
        err_glass = np.abs(s["sensor_depth"][far] - s["depth"][far])
        assert (err_behind < err_glass).mean() > 0.9  # it reads the wrong surface
    assert checked >= 2


def test_bag_make_writes_labels_sensor_depth_and_ground_truth(tabletop, tmp_path):
    from rosbags.highlevel import AnyReader

    from bgprompt_ros import conversions
    from bgprompt_ros.bag import TOPICS, make_bag, typestore

    make_bag(tabletop, tmp_path / "b")
    with np.load(tabletop / "shard-00000.npz") as f:
        ref = {k: f[k] for k in ("instance", "alpha", "sensor_depth", "depth")}
    got: dict = {}
    with AnyReader([tmp_path / "b"], default_typestore=typestore()) as reader:
        for conn, _, raw in reader.messages():
            m = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype.endswith("Image"):
                got.setdefault(conn.topic, []).append(
                    (m.encoding, conversions.image_to_array(m.encoding, m.height, m.width, m.step, bool(m.is_bigendian), m.data)))
    for i in range(6):
        enc, mask = got[TOPICS["mask"]][i]
        assert enc == "16UC1" and np.array_equal(mask, np.where(ref["alpha"][i] > 0, ref["instance"][i], 0))
        enc, depth = got[TOPICS["depth"]][i]
        assert enc == "16UC1" and np.array_equal(depth, sm.to_millimetres(ref["sensor_depth"][i]))
        enc, truth = got[TOPICS["truth"]][i]
        gt = ref["depth"][i]
        assert enc == "32FC1" and np.array_equal(truth[gt > 0], gt[gt > 0]) and np.isnan(truth[gt == 0]).all()


@pytest.mark.slow
def test_eval_grasp_scores_every_method_and_writes_its_report(tabletop, tmp_path):
    import json

    from bgprompt_training.grasp_eval import GraspEvalConfig, evaluate_grasp, write_report

    cfg = GraspEvalConfig(prompts=("none", "1bg"), min_pixels=40)
    result = evaluate_grasp(tabletop, cfg, progress=False, keep_clouds=1)
    methods = {r["method"] for r in result["rows"]}
    assert methods == {"raw sensor", "inpaint telea", "inpaint ns", "white + fusion", "1-BG + fusion",
                       "oracle (1-BG)"}
    for r in result["rows"]:
        assert r["material"] in sm.MATERIALS and r["chamfer_mm"] > 0
    path = write_report(result, tmp_path / "out", cfg.prompts)
    text = path.read_text()
    assert "| material | method |" in text and "## Goals" in text
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["rows"]) == len(result["rows"])
    assert list((tmp_path / "out").glob("clouds_*.png"))


def test_bag_eval_reports_object_clouds_in_millimetres_against_the_ground_truth(tabletop, tmp_path):
    from bgprompt_core import cloud_metrics as cm
    from bgprompt_ros import conversions
    from bgprompt_ros.bag import TOPICS, Combo, eval_bag, make_bag, typestore
    from rosbags.highlevel import AnyReader

    make_bag(tabletop, tmp_path / "b")
    params = {"model": "mini", "prompt": "1bg", "scale": "align-to-sensor", "align": "scale-shift",
              "fusion": "fill", "recenter": True}
    summary = eval_bag(tmp_path / "b", [Combo("fused", params)], out_bag=tmp_path / "pred", progress=False)
    rows = [r for r in summary["per_frame"]["fused"] if "chamfer_mm" in r]
    assert rows and all(r["chamfer_mm"] > 0 and 0 <= r["completeness_10mm"] <= 100 for r in rows)
    # frame by frame, the same figure from the output bag's cloud, decoded independently
    got: dict = {}
    with AnyReader([tmp_path / "b", tmp_path / "pred"], default_typestore=typestore()) as reader:
        for conn, t, raw in reader.messages():
            if conn.topic in (TOPICS["mask"], TOPICS["truth"], TOPICS["camera_info"], "/object_points"):
                got.setdefault(t, {})[conn.topic] = reader.deserialize(raw, conn.msgtype)
    row = rows[0]
    msgs = got[row["stamp"]]
    m, tr, info = msgs[TOPICS["mask"]], msgs[TOPICS["truth"]], msgs[TOPICS["camera_info"]]
    labels = conversions.image_to_array(m.encoding, m.height, m.width, m.step, False, m.data)
    truth = conversions.image_to_array(tr.encoding, tr.height, tr.width, tr.step, False, tr.data).astype(np.float32)
    K = np.asarray(info.k).reshape(3, 3)
    pc = msgs["/object_points"]  # dense (the default): object points with x y z, rgb at 16, label (uint32) at 20
    assert pc.height == 1 and pc.point_step == 32 and [f.name for f in pc.fields] == ["x", "y", "z", "rgb", "label",
                                                                                      "source"]
    words = np.frombuffer(bytes(pc.data), np.float32).reshape(-1, 8)
    xyz, point_label = words[:, :3], words[:, 5].view(np.uint32)
    chamfers = []
    for oid in [i for i in np.unique(labels) if i > 0]:
        obj = (labels == oid) & np.isfinite(truth)
        if obj.sum() < 16:
            continue
        pts = xyz[point_label == oid]
        chamfers.append(cm.cloud_errors(pts, cm.surface_samples(truth, obj, K))["chamfer_mm"])
    assert row["chamfer_mm"] == pytest.approx(np.mean(chamfers), rel=1e-6)
