"""Tabletop scenes with a simulated RGB-D sensor: the renderer, `bag make` on them and `eval-grasp`."""
import numpy as np
import pytest

from bgprompt_core.evaluation import sensor_model as sm
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
    from bgprompt_core.messages.bag_frames import TOPICS, typestore
    from bgprompt_ros.bags.make import make_bag

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


def _write_meshes(folder):
    """Two OBJ files: a tall box ("carton") and a flat open tray ("pan": concave, like a frying pan)."""
    import trimesh

    folder.mkdir()
    trimesh.creation.box((0.06, 0.06, 0.2)).export(folder / "carton.obj")
    outer = trimesh.creation.box((0.3, 0.3, 0.05))
    inner = trimesh.creation.box((0.26, 0.26, 0.05))
    inner.apply_translation((0, 0, 0.01))
    pan = trimesh.util.concatenate([outer, inner])  # two boxes: the rim read as a shallow concave dish
    pan.export(folder / "pan.obj")
    return folder


def test_render_tabletop_meshes_uses_the_meshes_and_names_them(tmp_path):
    """Issue 24: `render tabletop --meshes DIR` ignored DIR (byte-identical output, yet the manifest recorded it)."""
    import dataclasses
    import json

    meshes = _write_meshes(tmp_path / "meshes")
    base = RenderConfig(kind="tabletop", size=64, seed=11, families=("primitive",))
    render_dataset(base, tmp_path / "proc", 3, backend="numpy", progress=False)
    render_dataset(dataclasses.replace(base, meshes=str(meshes), mesh_up="z"), tmp_path / "mesh", 3, backend="numpy",
                   progress=False)
    with np.load(tmp_path / "proc" / "shard-00000.npz") as a, np.load(tmp_path / "mesh" / "shard-00000.npz") as b:
        assert not np.array_equal(a["depth"], b["depth"])
        names = [dict(x.split(":") for x in str(t).split(";")) for t in b["objects"]]
        proc_names = {n for t in a["objects"] for n in dict(x.split(":") for x in str(t).split(";")).values()}
        assert names and all(set(n.values()) <= {"carton", "pan"} for n in names)
        assert {n for d in names for n in d.values()} == {"carton", "pan"}
        assert proc_names <= {"primitive"}
        for i, d in enumerate(names):  # every named object is in the frame's instance map or hidden behind another
            assert set(int(k) for k in d) >= set(int(v) for v in np.unique(b["instance"][i]) if v >= 5)
        assert b["highlight"].dtype == np.float16 and b["highlight"].shape == b["depth"].shape
    manifest = json.loads((tmp_path / "mesh" / "manifest.json").read_text())
    assert manifest["mesh_files"] == ["carton.obj", "pan.obj"] and manifest["generator"]["meshes"] == str(meshes)


def test_resimulating_a_stored_frame_reproduces_its_sensor(tabletop):
    from bgprompt_training.render.tabletop import resimulate

    with np.load(tabletop / "shard-00000.npz") as f:
        s = {k: f[k][2] for k in ("depth", "K", "material", "behind", "highlight", "instance", "sensor_depth")}
    assert np.array_equal(resimulate(s, "d435-like", CFG.seed, 2), s["sensor_depth"])  # the stored stream
    harsh = resimulate(s, "harsh-stereo", CFG.seed, 2)
    assert np.array_equal(harsh, resimulate(s, "harsh-stereo", CFG.seed, 2)) and not np.array_equal(harsh, s["sensor_depth"])


@pytest.mark.slow
def test_eval_grasp_scores_every_method_and_writes_its_report(tabletop, tmp_path):
    """~1-3 min on 2 busy cores: the CLI on 6 tiny frames, two presets, --figures 0 (it crashed after the whole
    evaluation). Values are checked against independent computations."""
    import json

    from bgprompt_core.evaluation import cloud_metrics as cm
    from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator
    from bgprompt_training.cli import main
    from bgprompt_training.grasp import DEFAULT_PARAMS, GraspEvalConfig, frame_objects
    from bgprompt_training.data.rendered import RenderedDataset

    out = tmp_path / "out"
    assert main(["eval-grasp", "--data", str(tabletop), "--prompt", "none", "1bg", "--sensor", "d435-like",
                 "harsh-stereo", "--figures", "0", "--bootstrap", "50", "--min-pixels", "40", "--out", str(out)]) == 0
    text = (out / "summary.md").read_text()
    assert "## Goals" in text and "### procedural, harsh-stereo" in text and "### procedural, d435-like" in text
    assert not list(out.glob("clouds_*.png")) and (out / "chamfer_by_method.png").stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    rows = saved["rows"]
    cfg = GraspEvalConfig.from_params_file(DEFAULT_PARAMS, prompts=("none", "1bg", "tabletop"))
    assert saved["config"]["fusion"] == {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.fusion.__dict__.items()}
    methods = {r["method"] for r in rows}
    shipped = "tabletop 1-BG" if cfg.goal_prompt == "tabletop" else "1-BG"
    assert {"raw sensor", "inpaint telea", "inpaint ns", "white + fusion", "1-BG + fusion"} <= methods
    # independent: the raw cloud of the first object, and the fused cloud as the estimator itself fuses it
    ds = RenderedDataset(tabletop)
    first = next(r for r in rows if r["method"] == "raw sensor" and r["sensor"] == "d435-like")
    i = first["frame"]
    s = {**ds.raw(i), **ds.arrays(i, ("instance", "sensor_depth"))}
    obj = s["instance"] == first["object"]
    gt = cm.surface_samples(s["depth"], obj, s["K"])
    raw = cm.cloud_errors(cm.backproject_np(np.where(obj & (s["sensor_depth"] > 0), s["sensor_depth"], np.nan),
                                            s["K"])[obj & (s["sensor_depth"] > 0)], gt)
    assert first["chamfer_mm"] == pytest.approx(raw["chamfer_mm"], rel=0.02)  # GT queries subsampled
    ids = frame_objects(s, 40)
    labels = np.where(np.isin(s["instance"], ids), s["instance"], 0).astype(np.uint16)
    est = ObjectDepthEstimator(EstimatorConfig(prompt="1bg", scale="align-to-sensor", fusion="fill", align=cfg.align,
                                               recenter=cfg.recenter, fusion_config=cfg.fusion, min_object_pixels=40))
    res = est.estimate(s["rgb"], s["K"], labels, s["sensor_depth"])
    fused = next(r for r in rows if r["method"] == "1-BG + fusion" and r["sensor"] == "d435-like" and r["frame"] == i
                 and r["object"] == first["object"])
    assert fused["points"] == int(((res.instance == first["object"]) & res.valid).sum())
    for r in rows:
        assert r["material"] in sm.MATERIALS and (r["chamfer_mm"] is None) == (r["points"] < 1)
    # the summary: medians and means of the rows, shares of empty clouds
    for e in saved["summary"]:
        sel = [r for r in rows if (r["set"], r["sensor"], r["material"], r["method"]) ==
               (e["set"], e["sensor"], e["material"], e["method"])]
        vals = [r["chamfer_mm"] if r["chamfer_mm"] is not None else np.inf for r in sel]
        # results.json stores measured values to 4 decimals: the median of stored rows is within 1e-4 of it
        assert e["objects"] == len(sel) and (e["chamfer_mm"] is None or
                                             e["chamfer_mm"] == pytest.approx(np.median(vals), abs=1e-4))
        assert e["no_cloud"] == pytest.approx(np.mean([r["points"] < 3 for r in sel]), abs=1e-4)
    empty = [g for g in saved["goals"] if g["goal"].startswith("objects with sensor readings and no fused cloud")]
    assert len(empty) == 2 and all(g["value"] == 0 and g["met"] for g in empty)
    assert shipped  # the goals are judged on the params file's prompt (see its rows in the summary)


def _brute_force_cloud_errors(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Chamfer, accuracy and completeness within 10 mm by the definition, in plain numpy: every pair's distance."""
    d = np.sqrt(((pred[:, None, :] - gt[None, :, :]) ** 2).sum(-1)) * 1000  # mm, (pred, gt)
    to_gt, to_pred = d.min(1), d.min(0)
    return {"chamfer_mm": 0.5 * (to_gt.mean() + to_pred.mean()), "accuracy_10mm": 100 * (to_gt <= 10).mean(),
            "completeness_10mm": 100 * (to_pred <= 10).mean()}


def test_bag_eval_reports_object_clouds_in_millimetres_against_the_ground_truth(tabletop, tmp_path):
    """Each object's figures equal an independent computation: the output bag's cloud decoded by hand, the truth
    back-projected by hand, nearest neighbours by brute force (no KD-tree, no cloud_metrics.cloud_errors), objects
    picked from the label image. The ground-truth surface samples come from cloud_metrics.surface_samples, which
    the closed-form sphere test below pins down."""
    from rosbags.highlevel import AnyReader

    from bgprompt_core.evaluation import cloud_metrics as cm
    from bgprompt_ros import conversions
    from bgprompt_core.messages.bag_frames import TOPICS, typestore
    from bgprompt_ros.bags.evaluate import Combo, eval_bag
    from bgprompt_ros.bags.make import make_bag

    make_bag(tabletop, tmp_path / "b")
    params = {"model": "mini", "prompt": "1bg", "scale": "align-to-sensor", "align": "scale-shift",
              "fusion": "fill", "recenter": True}
    summary = eval_bag(tmp_path / "b", [Combo("fused", params)], out_bag=tmp_path / "pred", progress=False)
    rows = [r for r in summary["per_frame"]["fused"] if r.get("objects")]
    assert len(rows) == 6
    got: dict = {}
    with AnyReader([tmp_path / "b", tmp_path / "pred"], default_typestore=typestore()) as reader:
        for conn, t, raw in reader.messages():
            if conn.topic in (TOPICS["mask"], TOPICS["truth"], TOPICS["camera_info"], "/object_points"):
                got.setdefault(t, {})[conn.topic] = reader.deserialize(raw, conn.msgtype)
    checked = 0
    for row in rows:
        msgs = got[row["stamp"]]
        m, tr, info = msgs[TOPICS["mask"]], msgs[TOPICS["truth"]], msgs[TOPICS["camera_info"]]
        labels = np.frombuffer(bytes(m.data), "<u2").reshape(m.height, m.width)
        truth = np.frombuffer(bytes(tr.data), "<f4").reshape(tr.height, tr.width)
        K = np.asarray(info.k, np.float64).reshape(3, 3)
        pc = msgs["/object_points"]  # dense (the default): x y z, rgb at 16, label (uint32) at 20
        assert pc.height == 1 and pc.point_step == 32 and [f.name for f in pc.fields] == ["x", "y", "z", "rgb",
                                                                                          "label", "source"]
        words = np.frombuffer(bytes(pc.data), np.float32).reshape(-1, 8)
        xyz, point_label = words[:, :3].astype(np.float64), words[:, 5].view(np.uint32)
        ids = [int(i) for i in np.unique(labels) if i > 0 and ((labels == i) & np.isfinite(truth)).sum() >= 16]
        assert [o["id"] for o in row["objects"]] == ids  # every object with truth, none left out
        for o in row["objects"]:
            obj = (labels == o["id"]) & np.isfinite(truth)
            pts = xyz[point_label == o["id"]]
            v, u = np.nonzero(obj)
            z = truth[v, u].astype(np.float64)
            pixels = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
            if len(pts) == 0:
                assert o["chamfer_mm"] == np.inf and o["completeness_10mm"] == 0
                continue
            want = _brute_force_cloud_errors(pts, cm.surface_samples(truth, obj, K))
            for k, v_ in want.items():
                assert o[k] == pytest.approx(v_, rel=1e-5, abs=1e-9), k  # the product's truth is float32
            assert o["centroid_mm"] == pytest.approx(np.linalg.norm(pts.mean(0) - pixels.mean(0)) * 1000, rel=1e-5)
            checked += 1
    assert checked >= 6
    fused = summary["combos"][0]
    finite = [o["chamfer_mm"] for r in rows for o in r["objects"] if np.isfinite(o["chamfer_mm"])]
    assert fused["chamfer_mm"] == pytest.approx(np.mean(finite))
    assert fused["counts"]["chamfer_mm"]["finite"] == len(finite)
    sensor = summary["combos"][1]
    assert sensor["name"] == "sensor (raw depth)" and sensor["counts"]["chamfer_mm"]["of"] == \
        fused["counts"]["chamfer_mm"]["of"]


def test_truth_surface_samples_lie_on_a_sphere_and_cover_it_twice_as_finely_as_the_pixels():
    """The ground-truth side of every cloud figure, against closed-form geometry: a sphere's depth by ray casting."""
    from bgprompt_core.evaluation import cloud_metrics as cm

    K = np.array([[80.0, 0, 31.5], [0, 80.0, 23.5], [0, 0, 1]])
    c, r = np.array([0.02, -0.01, 0.8]), 0.12
    v, u = np.mgrid[0:48, 0:64].astype(np.float64)

    def cast(u, v):  # first hit of each pixel's ray with the sphere: z-depth, NaN on a miss
        d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
        b = (d @ c) / (d * d).sum(-1)
        disc = b**2 - ((c @ c) - r**2) / (d * d).sum(-1)
        return np.where(disc >= 0, b - np.sqrt(np.maximum(disc, 0)), np.nan), d

    depth, _ = cast(u, v)
    mask = np.isfinite(depth)
    pts = cm.surface_samples(depth.astype(np.float32), mask, K)
    on_sphere = np.abs(np.linalg.norm(pts - c, axis=1) - r)
    assert on_sphere.max() < 1.5e-3 and np.median(on_sphere) < 2e-4  # bilinear chords of a 12 cm sphere
    # coverage in the image, where the sphere faces the camera within 20 degrees (depth steps under the sampler's
    # 1 cm): every point has a sample within 0.4 px (a 2x grid: 0.35 px at most; the pixel grid itself: 0.71 px)
    uv = pts[:, :2] / pts[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    fine_u, fine_v = np.meshgrid(np.arange(0, 64, 0.125), np.arange(0, 48, 0.125))
    z, d = cast(fine_u, fine_v)
    p = d * z[..., None]
    facing = ((p - c) / r * -p / np.linalg.norm(p, axis=-1, keepdims=True)).sum(-1) > np.cos(np.radians(20))
    pixel_of = (np.round(fine_v).astype(int).clip(0, 47), np.round(fine_u).astype(int).clip(0, 63))
    inner = facing & cv2_erode(mask, 2)[pixel_of]
    from scipy.spatial import cKDTree

    gap = cKDTree(uv).query(np.stack([fine_u[inner], fine_v[inner]], 1))[0]
    assert inner.sum() > 1000 and gap.max() < 0.4, gap.max()


def cv2_erode(mask: np.ndarray, n: int) -> np.ndarray:
    import cv2

    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=n).astype(bool)
