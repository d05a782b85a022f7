"""``bgprompt eval-grasp``: object clouds in metres from imperfect RGB-D sensors, by material.

On `bgprompt render tabletop` frames (ground truth beside what a simulated sensor reads), for every object that
is whole in the frame, each method's object cloud is scored against the ground-truth surface
(``bgprompt_core.evaluation.cloud_metrics``), for each sensor preset (``--sensor``; a stored frame is re-simulated for any
preset, ``tabletop.resimulate``) and each data set (procedural shapes, real meshes). Methods:

- ``raw sensor``: the sensor's valid readings on the object's mask (what a robot uses today);
- ``inpaint telea`` / ``inpaint ns``: every hole of the sensor's depth image filled by ``cv2.inpaint`` in whole
  millimetres (``fusion.inpaint_mm``: OpenCV 5.0's Telea is wrong on float metres, opencv#25404), then cropped
  by the object's mask: the cheap baseline of grasping code;
- ``<prompt> + fusion``: the prompt's relative prediction fused with the sensor exactly as the node does with
  the settings of the params file (``config/object_depth_rgbd.yaml``: align, recenter, fusion_*), the noise
  terms set to each preset's (a user sets them to their camera's); one row per prompt (``white``: no prompt);
- ``<prompt> + fusion, fill: prediction``: the same with every hole filled from the prediction (the fill before
  issue 24), to measure the hybrid fill against it;
- ``oracle (<prompt>)``: that prompt's relative prediction with scale and shift fitted to the GROUND TRUTH on
  the object, which separates shape error from scale error.

Reported per (set, sensor, material, method): median AND mean over objects, the share of objects with no cloud
(and of those with sensor readings yet no cloud), and the goals' ratios with paired bootstrap 95% intervals.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bgprompt_core.evaluation import cloud_metrics as cm
from bgprompt_core.evaluation import sensor_model as sm
from bgprompt_core.method.config import ConfigError
from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator
from bgprompt_core.rgbd.fusion import SOURCE_SENSOR, FusionConfig, fuse_frame, fusion_config_from_params, inpaint_mm
from bgprompt_core.geometry import backproject_np

SUMMARY = ("chamfer_mm", "accuracy_10mm", "completeness_10mm", "completeness_5mm", "centroid_mm", "box_extent_mm",
           "grasp_width_mm", "grasp_centre_mm")
MAX_QUERIES = 8000  # GT surface samples per object whose distance to a cloud is measured (a fixed random subset)
DEFAULT_PARAMS = Path(__file__).resolve().parents[2] / "config" / "object_depth_rgbd.yaml"


@dataclass(frozen=True)
class GraspEvalConfig:
    """``bgprompt eval-grasp``: object clouds in metres, prompt + fusion against the sensor and cv2.inpaint.

    Args:
        model (str, default "mini"): the frozen depth network.
        prompts (tuple[str], default ("none", "1bg", "pnet", "tabletop")): prompts fused ("none": white).
        shipped_prompt (str | None): the prompt the goals are judged on (default: the params file's ``prompt``).
        oracle_prompt (str | None): the prompt of the oracle and fill-comparison rows; default the shipped one.
        sensors (tuple[str], default every preset): sensor presets (``sensor_model.PRESETS``); "stored" is the
            render's own sensor depth.
        count (int | None): at most this many frames per data set (None: all).
        min_pixels (int, default 150): objects with fewer mask pixels are left out.
        inpaint_radius (int, default 5): cv2.inpaint's radius for the inpainting baselines.
        align (str, default "scale-shift"), recenter (bool, default True): the node's settings (from the params
            file when one is given).
        fusion (FusionConfig): fusion settings (from the params file's fusion_* when one is given); the noise
            terms are replaced by each preset's.
        compare_fill (bool, default True): add the "fill: prediction" rows for the oracle prompt.
        bootstrap (int, default 1000): resamples of the goals' ratio intervals.
        local_only (bool, default True): never download model files.
    """

    model: str = "mini"
    prompts: tuple[str, ...] = ("none", "1bg", "pnet", "tabletop")
    shipped_prompt: str | None = None
    oracle_prompt: str | None = None
    sensors: tuple[str, ...] = tuple(sm.PRESETS)
    count: int | None = None
    min_pixels: int = 150
    inpaint_radius: int = 5
    align: str = "scale-shift"
    recenter: bool = True
    fusion: FusionConfig = field(default_factory=FusionConfig)
    compare_fill: bool = True
    bootstrap: int = 1000
    local_only: bool = True

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ConfigError("at least one prompt (none is the white background)")
        if self.min_pixels < 3 or self.inpaint_radius < 1:
            raise ConfigError("min_pixels must be >= 3 and inpaint_radius >= 1")
        bad = [s for s in self.sensors if s != "stored" and s not in sm.PRESETS]
        if bad or not self.sensors:
            raise ConfigError(f"unknown sensors {bad}; choose from {('stored', *sm.PRESETS)}")
        if self.goal_prompt not in self.prompts:
            raise ConfigError(f"the shipped prompt {self.goal_prompt!r} must be among the prompts {self.prompts}")

    @property
    def goal_prompt(self) -> str:
        return self.shipped_prompt or self.prompts[-1]

    @staticmethod
    def from_params_file(path: str | Path = DEFAULT_PARAMS, **kw) -> "GraspEvalConfig":
        """The node's settings from a ROS params YAML (``/**`` or ``object_depth``): prompt, align, recenter and
        fusion_*: what ships is what is measured."""
        p = read_node_params(path)
        for key in ("scale", "fusion"):
            want = {"scale": "align-to-sensor", "fusion": "fill"}[key]
            if p.get(key) != want:
                raise ConfigError(f"{path}: eval-grasp measures {key}: {want}, the file has {p.get(key)!r}")
        return GraspEvalConfig(shipped_prompt=p.get("prompt", "1bg"), align=p.get("align", "scale-shift"),
                               recenter=bool(p.get("recenter", False)), fusion=fusion_config_from_params(p), **kw)


def read_node_params(path: str | Path, node: str = "object_depth") -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    out: dict = {}
    for key in ("/**", node, f"/{node}"):
        out.update((data.get(key) or {}).get("ros__parameters", {}))
    return out


def _points(depth: np.ndarray, K: np.ndarray, sel: np.ndarray) -> np.ndarray:
    return backproject_np(np.where(sel, depth, np.nan).astype(np.float32), K)[sel].astype(np.float64)


def frame_objects(sample: dict, min_pixels: int) -> list[int]:
    """Instance ids of the placed objects that are whole in the frame (not cut by its border)."""
    inst, alpha = sample["instance"], sample["alpha"] > 0
    ids = [int(i) for i in np.unique(inst[alpha]) if i > 0]
    border = np.concatenate([inst[0], inst[-1], inst[:, 0], inst[:, -1]])
    return [i for i in ids if (inst == i).sum() >= min_pixels and i not in border]


def consistent_readings(sensor: np.ndarray, gt: np.ndarray, sel: np.ndarray, p: sm.SensorPreset | None) -> np.ndarray:
    """Readings within 3 sigma (+ half a depth step) of the truth (exact ones for a perfect sensor): the ones
    fusion must keep."""
    tol = 3 * p.sigma(gt) + 0.5 * p.quantum if p is not None else 1e-6
    return sel & (sensor > 0) & (np.abs(sensor - gt) <= tol)


def _prompt_name(p: str) -> str:
    return {"none": "white", "1bg": "1-BG", "default": "1-BG", "pnet": "PNet", "tabletop": "tabletop 1-BG"}.get(p, Path(p).stem)


def fused_name(p: str) -> str:
    return f"{_prompt_name(p)} + fusion"


PREDICTION_FILL = ", fill: prediction"


class _Methods:
    """The estimators of one evaluation: one relative estimator per prompt (the network runs once per frame and
    prompt; fusion then runs per sensor preset, as the node's estimator would with that sensor)."""

    def __init__(self, cfg: GraspEvalConfig):
        self.cfg = cfg
        base = dict(model=cfg.model, scale="relative", align=cfg.align, recenter=cfg.recenter,
                    local_only=cfg.local_only, max_objects=16, min_object_pixels=cfg.min_pixels)
        self.relative = {p: ObjectDepthEstimator(EstimatorConfig(prompt=p, **base)) for p in cfg.prompts}

    def fusion_for(self, preset: sm.SensorPreset | None) -> FusionConfig:
        return self.cfg.fusion if preset is None else replace(
            self.cfg.fusion, noise_floor=preset.noise.floor, noise_linear=preset.noise.linear,
            noise_quadratic=preset.noise.quadratic)


def _sensor_of(s: dict, name: str, stored_sensor: str, seed: int, index: int) -> tuple[np.ndarray, sm.SensorPreset | None]:
    from .render.tabletop import resimulate

    if name == "stored" or (name == stored_sensor and "highlight" not in s):
        return s["sensor_depth"], sm.preset(stored_sensor)
    if name == stored_sensor:
        return s["sensor_depth"], sm.preset(name)
    return resimulate(s, name, seed, index), sm.preset(name)


def evaluate_grasp(data: str | Path, cfg: GraspEvalConfig, progress: bool = True, keep_clouds: int = 0,
                   set_name: str | None = None, methods: _Methods | None = None) -> dict:
    """Per-object rows (every sensor preset) and their summary; ``keep_clouds`` clouds per (sensor, material) for
    figures."""
    from .data.rendered import RenderedDataset
    from .render.tabletop import object_names

    ds = RenderedDataset(data)
    if ds.manifest["kind"] != "tabletop":
        raise ConfigError(f"{data}: eval-grasp needs `bgprompt render tabletop` output, not {ds.manifest['kind']}")
    gen = ds.manifest["generator"]
    stored_sensor, seed = gen.get("sensor", "d435-like"), int(gen.get("seed", 0))
    set_name = set_name or ("real meshes" if gen.get("meshes") else "procedural")
    methods = methods or _Methods(cfg)
    oracle_prompt = cfg.oracle_prompt or cfg.goal_prompt
    rows: list[dict] = []
    clouds: dict[str, list[dict]] = {}
    n = len(ds) if cfg.count is None else min(cfg.count, len(ds))
    keys = ("instance", "sensor_depth", "material", "cam_from_world", "behind")
    for i in tqdm(range(n), desc=f"eval-grasp {set_name}", unit="frame", disable=not progress):
        s = {**ds.raw(i), **ds.arrays(i, keys)}
        for extra in ("highlight", "objects"):
            try:
                s.update(ds.arrays(i, (extra,)))
            except KeyError:
                pass
        s["instance"] = s["instance"].astype(np.int32)
        ids = frame_objects(s, cfg.min_pixels)
        if not ids:
            continue
        K, gt, inst = s["K"], s["depth"], s["instance"]
        names = object_names(s)
        labels = np.where(np.isin(inst, ids), inst, 0).astype(np.uint16)
        up = s["cam_from_world"][:3, :3] @ np.array([0.0, 1.0, 0.0])  # the table's normal, camera frame
        rel = {p: est.estimate(s["rgb"], K, labels) for p, est in methods.relative.items()}
        per_obj = {}
        for oid in ids:
            obj = inst == oid
            per_obj[oid] = dict(obj=obj, material=sm.MATERIALS[int(np.bincount(s["material"][obj]).argmax())],
                                gt_pts=cm.Surface(cm.surface_samples(gt, obj, K), MAX_QUERIES), gt_grid=_points(gt, K, obj & (gt > 0)))
        oracle_rows = {}
        o_rel = rel[oracle_prompt]
        for oid, o in per_obj.items():
            sel = (o_rel.instance == oid) & np.isfinite(o_rel.depth) & (gt > 0)
            if sel.sum() >= 3:
                A = np.stack([o_rel.depth[sel], np.ones(sel.sum())], 1).astype(np.float64)
                (a, b), *_ = np.linalg.lstsq(A, gt[sel].astype(np.float64), rcond=None)
                oracle_rows[oid] = cm.object_report(_points(a * o_rel.depth + b, K, sel), o["gt_pts"], o["gt_grid"], up)
        for sensor_name in cfg.sensors:
            sensor, preset = _sensor_of(s, sensor_name, stored_sensor, seed, i)
            label = stored_sensor if sensor_name == "stored" else sensor_name
            fcfg = methods.fusion_for(preset)
            fused = {}
            for p, r in rel.items():
                pred = np.where(r.instance > 0, r.depth, np.nan)
                fused[fused_name(p)] = fuse_frame(pred, labels, ids, sensor, K, fcfg, cfg.align)
                if cfg.compare_fill and p == oracle_prompt:
                    fused[fused_name(p) + PREDICTION_FILL] = fuse_frame(
                        pred, labels, ids, sensor, K, replace(fcfg, hole_fill="prediction"), cfg.align)
            holes = ~(sensor > 0)
            filled = {how: inpaint_mm(sensor, holes, cfg.inpaint_radius, how) for how in ("telea", "ns")}
            for oid, o in per_obj.items():
                obj = o["obj"]
                has = obj & (sensor > 0)
                clouds_ = {"raw sensor": _points(sensor, K, has)}
                for how, depth in filled.items():  # grasping code fills every hole of the depth image, then crops
                    clouds_[f"inpaint {how}"] = _points(depth, K, obj & (depth > 0))
                extra: dict[str, dict] = {}
                consistent = consistent_readings(sensor, gt, obj, preset)
                for name, (depth, source, reports, _) in fused.items():
                    sel = (labels == oid) & np.isfinite(depth)
                    clouds_[name] = _points(depth, K, sel)
                    rep = reports.get(oid)
                    kept = (source == SOURCE_SENSOR) & (depth == sensor)
                    extra[name] = {"scale_from": rep.scale_from if rep else "none",
                                   "reason": rep.reason if rep else "no report",
                                   "consistent_kept": float(kept[consistent].mean()) if consistent.any() else np.nan}
                base = {"set": set_name, "sensor": label, "frame": i, "object": oid, "name": names.get(oid, ""),
                        "material": o["material"], "coverage": float(has.sum() / obj.sum())}
                for name, pts in clouds_.items():
                    rows.append({**base, "method": name, **cm.object_report(pts, o["gt_pts"], o["gt_grid"], up),
                                 **extra.get(name, {})})
                if oid in oracle_rows:
                    rows.append({**base, "method": f"oracle ({_prompt_name(oracle_prompt)})", **oracle_rows[oid]})
                key = f"{set_name} / {label} / {o['material']}"
                if keep_clouds and len(clouds.setdefault(key, [])) < keep_clouds:
                    clouds[key].append({"gt": o["gt_pts"].points, "up": up, **clouds_})
    return {"rows": rows, "clouds": clouds, "frames": {set_name: n}, "sets": [set_name],
            "config": {**{k: v for k, v in cfg.__dict__.items() if k != "fusion"}, "fusion": cfg.fusion.__dict__}}


def merge_results(results: list[dict], cfg: GraspEvalConfig) -> dict:
    """Several data sets' results as one (rows, clouds and frame counts side by side), with the summary."""
    out = {"rows": [], "clouds": {}, "frames": {}, "sets": [], "config": results[0]["config"]}
    for r in results:
        out["rows"] += r["rows"]
        out["clouds"].update(r["clouds"])
        out["frames"].update(r["frames"])
        out["sets"] += r["sets"]
    out["summary"] = summarize(out["rows"])
    out["goals"] = goals(out["rows"], cfg)
    return out


def _empty(r: dict) -> bool:
    return not r["points"] >= 3


def summarize(rows: list[dict]) -> list[dict]:
    """Per (set, sensor, material, method): object count, share with no cloud (and with readings yet no cloud),
    median and mean of every SUMMARY metric (means over objects with a cloud)."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["sensor"], r["material"], r["method"]), []).append(r)
    order = lambda k: (k[0], k[1], sm.MATERIALS.index(k[2]), k[3])  # noqa: E731
    for key in sorted(groups, key=order):
        sel = groups[key]
        entry = dict(zip(("set", "sensor", "material", "method"), key), objects=len(sel))
        entry["no_cloud"] = float(np.mean([_empty(r) for r in sel]))
        entry["no_cloud_with_readings"] = float(np.mean([_empty(r) and r.get("coverage", 0) > 0 for r in sel]))
        for m in SUMMARY + ("consistent_kept",):
            vals = np.array([r.get(m, np.nan) for r in sel], float)
            finite = vals[np.isfinite(vals)]
            entry[m] = float(np.median(vals[~np.isnan(vals)])) if (~np.isnan(vals)).any() else np.nan
            entry[f"{m}_mean"] = float(finite.mean()) if len(finite) else np.nan
        entry["consistent_kept_min"] = float(np.nanmin([r.get("consistent_kept", np.nan) for r in sel])) \
            if any(np.isfinite(r.get("consistent_kept", np.nan)) for r in sel) else np.nan
        entry["sensor_only"] = float(np.mean([r.get("scale_from") == "sensor-only" for r in sel])) \
            if "scale_from" in sel[0] else np.nan
        out.append(entry)
    return out


def ratio_interval(a: np.ndarray, b: np.ndarray, n: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """median(a) / median(b) over paired objects and its paired-bootstrap 95% interval."""
    ratio = float(np.median(a) / np.median(b))
    if n <= 0 or len(a) < 2:
        return ratio, np.nan, np.nan
    idx = rng.integers(0, len(a), (n, len(a)))
    boot = np.median(a[idx], 1) / np.median(b[idx], 1)
    lo, hi = np.quantile(boot[np.isfinite(boot)], [0.025, 0.975]) if np.isfinite(boot).any() else (np.nan, np.nan)
    return ratio, float(lo), float(hi)


def _paired(rows: list[dict], set_: str, sensor: str, material: str, a: str, b: str, metric: str):
    """Values of ``metric`` for methods a and b on the same objects (inf, i.e. no cloud, kept: a median is robust
    to it and hiding it would flatter the method)."""
    va = {(r["frame"], r["object"]): r[metric] for r in rows
          if (r["set"], r["sensor"], r["material"], r["method"]) == (set_, sensor, material, a)}
    vb = {(r["frame"], r["object"]): r[metric] for r in rows
          if (r["set"], r["sensor"], r["material"], r["method"]) == (set_, sensor, material, b)}
    keys = sorted(set(va) & set(vb))
    return np.array([va[k] for k in keys], float), np.array([vb[k] for k in keys], float)


def goals(rows: list[dict], cfg: GraspEvalConfig) -> list[dict]:
    """Every goal of issue 24 per (set, sensor), each with its figure, interval, threshold and verdict, judged on
    the shipped prompt's fusion (chosen before the test split was seen: the params file's prompt)."""
    rng = np.random.default_rng(0)
    best = fused_name(cfg.goal_prompt)
    out = []
    combos = sorted({(r["set"], r["sensor"]) for r in rows})
    fused_methods = sorted({r["method"] for r in rows if r["method"].endswith("+ fusion")})

    def add(set_, sensor, material, goal, value, threshold, ok, interval=(np.nan, np.nan), note=""):
        out.append({"set": set_, "sensor": sensor, "material": material, "goal": goal, "value": value,
                    "low": interval[0], "high": interval[1], "threshold": threshold, "met": bool(ok), "note": note})

    for set_, sensor in combos:
        here = [r for r in rows if r["set"] == set_ and r["sensor"] == sensor]
        with_readings = [r for r in here if r["method"] in fused_methods and r.get("coverage", 0) > 0]
        empty = float(np.mean([_empty(r) for r in with_readings])) if with_readings else 0.0
        add(set_, sensor, "all", "objects with sensor readings and no fused cloud (every prompt)", 100 * empty,
            "0%", empty == 0)
        mats = {r["material"] for r in here}
        for material in [m for m in sm.MATERIALS if m in mats]:
            def ratio(a, b, metric="chamfer_mm"):
                va, vb = _paired(here, set_, sensor, material, a, b, metric)
                return ratio_interval(va, vb, cfg.bootstrap, rng) if len(va) else (np.nan, np.nan, np.nan)

            inp = min(("inpaint telea", "inpaint ns"), key=lambda m: np.median(
                _paired(here, set_, sensor, material, m, m, "chamfer_mm")[0] if any(
                    r["method"] == m and r["material"] == material for r in here) else [np.inf]))
            b_rows = [r for r in here if r["method"] == best and r["material"] == material]
            if not b_rows:
                continue
            if material == "diffuse":
                r, lo, hi = ratio(best, "raw sensor")
                add(set_, sensor, material, "Chamfer vs raw sensor", r, "<= 1.0x", r <= 1.0, (lo, hi))
                kept = np.array([x.get("consistent_kept", np.nan) for x in b_rows], float)
                kept = kept[np.isfinite(kept)]
                add(set_, sensor, material, "consistent readings kept (mean; min over objects)",
                    100 * float(kept.mean()) if len(kept) else np.nan, "100%",
                    len(kept) == 0 or kept.min() >= 0.9999, note=f"min {100 * kept.min():.1f}%" if len(kept) else "")
            elif material in ("specular", "dark"):
                r, lo, hi = ratio(best, inp)
                add(set_, sensor, material, f"Chamfer vs the better inpainting ({inp})", r, "<= 0.6x", r <= 0.6, (lo, hi))
                r, lo, hi = ratio(best, inp, "centroid_mm")
                add(set_, sensor, material, f"centroid error vs {inp}", r, "<= 0.3x", r <= 0.3, (lo, hi))
                c = float(np.median([x["completeness_10mm"] for x in b_rows]))
                add(set_, sensor, material, "completeness within 10 mm (median)", c, ">= 90%", c >= 90)
            else:
                r, lo, hi = ratio(best, inp)
                add(set_, sensor, material, f"Chamfer vs the better inpainting ({inp})", r, "<= 0.5x", r <= 0.5, (lo, hi))
                a = np.array([x["accuracy_10mm"] for x in b_rows], float)
                acc = float(np.median(np.nan_to_num(a, nan=0.0)))
                add(set_, sensor, material, "fused points within 10 mm of the surface (median)", acc, ">= 50%", acc >= 50)
            if material != "diffuse" and any(r["method"] == "white + fusion" for r in here):
                r, lo, hi = ratio(best, "white + fusion")
                add(set_, sensor, material, "the prompt matters: Chamfer vs white + fusion", r, "<= 0.8x (>= 20% better)",
                    r <= 0.8, (lo, hi))
    return out


def _fmt(v: float, digits: int = 1) -> str:
    return "inf" if v == np.inf else ("nan" if not np.isfinite(v) else f"{v:.{digits}f}")


def markdown(summary: list[dict], set_: str, sensor: str) -> str:
    head = ["material", "method", "objects", "no cloud %", "Chamfer mm (median / mean)", "acc@10mm %",
            "compl@10mm %", "compl@5mm %", "centroid mm (median / mean)", "box extent mm", "grasp width mm",
            "grasp centre mm", "sensor-only %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in summary:
        if (e["set"], e["sensor"]) != (set_, sensor):
            continue
        vals = [e["material"], e["method"], str(e["objects"]), _fmt(100 * e["no_cloud"], 0),
                f"{_fmt(e['chamfer_mm'])} / {_fmt(e['chamfer_mm_mean'])}", _fmt(e["accuracy_10mm"]),
                _fmt(e["completeness_10mm"]), _fmt(e["completeness_5mm"]),
                f"{_fmt(e['centroid_mm'])} / {_fmt(e['centroid_mm_mean'])}", _fmt(e["box_extent_mm"]),
                _fmt(e["grasp_width_mm"]), _fmt(e["grasp_centre_mm"]),
                _fmt(100 * e["sensor_only"], 0) if np.isfinite(e["sensor_only"]) else ""]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def goal_lines(goal_rows: list[dict], set_: str, sensor: str) -> list[str]:
    lines = []
    for g in goal_rows:
        if (g["set"], g["sensor"]) != (set_, sensor):
            continue
        pct = not g["threshold"].rstrip(")").endswith("x") and "x " not in g["threshold"]
        val = f"{_fmt(g['value'])}%" if pct else f"{_fmt(g['value'], 2)}x"
        ci = f" [95% CI {_fmt(g['low'], 2)}, {_fmt(g['high'], 2)}]" if np.isfinite(g["low"]) else ""
        note = f" ({g['note']})" if g["note"] else ""
        lines.append(f"- {g['material']}: {g['goal']}: {val}{ci}{note} (goal {g['threshold']}): "
                     f"{'met' if g['met'] else '**NOT met**'}")
    return lines


def cloud_figure(clouds: list[dict], methods: list[str], path: Path, title: str) -> Path | None:
    """Side views of each object's clouds (GT in grey behind every panel), one row per object; None if empty."""
    if not clouds:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["gt"] + methods
    fig, axes = plt.subplots(len(clouds), len(cols), figsize=(2.4 * len(cols), 2.4 * len(clouds)), squeeze=False)
    for r, c in enumerate(clouds):
        up = c["up"] / np.linalg.norm(c["up"])
        side = np.cross(up, [0.0, 0.0, 1.0])
        side /= np.linalg.norm(side)
        centre = c["gt"].mean(0)
        view = lambda p: ((p - centre) @ side * 1e3, (p - centre) @ up * 1e3)  # noqa: E731
        gx, gy = view(c["gt"])
        for k, name in enumerate(cols):
            ax = axes[r, k]
            ax.scatter(gx, gy, s=0.5, c="0.8")
            pts = c.get(name, np.zeros((0, 3)))
            if name != "gt" and len(pts):
                x, y = view(pts)
                ax.scatter(x, y, s=0.5, c=np.clip((pts - centre) @ np.cross(side, up) * 1e3, -60, 60), cmap="coolwarm")
            ax.set_xlim(gx.min() - 30, gx.max() + 30)
            ax.set_ylim(gy.min() - 30, gy.max() + 30)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def chamfer_chart(summary: list[dict], methods: list[str], path: Path) -> Path:
    """Median Chamfer (log scale) per material and method, one panel per (set, sensor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos = sorted({(e["set"], e["sensor"]) for e in summary})
    fig, axes = plt.subplots(1, len(combos), figsize=(4.2 * len(combos), 3.6), squeeze=False)
    for ax, (set_, sensor) in zip(axes[0], combos):
        mats = [m for m in sm.MATERIALS if any(e["material"] == m and (e["set"], e["sensor"]) == (set_, sensor)
                                                for e in summary)]
        width = 0.8 / max(len(methods), 1)
        for k, method in enumerate(methods):
            vals = []
            for m in mats:
                e = next((e for e in summary if (e["set"], e["sensor"], e["material"], e["method"]) ==
                          (set_, sensor, m, method)), None)
                vals.append(e["chamfer_mm"] if e and np.isfinite(e["chamfer_mm"]) else np.nan)
            ax.bar(np.arange(len(mats)) + k * width, vals, width, label=method)
        ax.set_xticks(np.arange(len(mats)) + 0.4 - width / 2, mats, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"{set_} / {sensor}", fontsize=9)
        ax.set_ylabel("median Chamfer (mm)")
    axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: dict, out: Path, cfg: GraspEvalConfig, params_file: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    summary, goal_rows = result["summary"], result["goals"]
    shipped = fused_name(cfg.goal_prompt)
    figs = []
    for key, clouds in result["clouds"].items():
        if "harsh-stereo" not in key and any("harsh-stereo" in k for k in result["clouds"]):
            continue  # side views for the harshest preset only (the tables cover every preset)
        methods = ["raw sensor", "inpaint ns", shipped]
        f = cloud_figure(clouds, methods, out / f"clouds_{key.replace(' / ', '_').replace(' ', '-')}.png",
                         f"{key}: side views (mm), GT in grey")
        if f is not None:
            figs.append(f)
    chart_methods = ["raw sensor", "inpaint ns", "inpaint telea", "white + fusion", shipped]
    figs.append(chamfer_chart(summary, [m for m in chart_methods if any(e["method"] == m for e in summary)],
                              out / "chamfer_by_method.png"))
    frames = ", ".join(f"{n} frames of {s}" for s, n in result["frames"].items())
    met = sum(g["met"] for g in goal_rows)
    lines = ["# Object clouds in metres from simulated RGB-D sensors", "",
             f"{frames}; every sensor preset of `bgprompt_core.evaluation.sensor_model` ({', '.join(cfg.sensors)}); whole "
             f"objects only. Fusion runs with the settings of `{params_file or 'the config given'}` (align "
             f"`{cfg.align}`, recenter `{cfg.recenter}`, hole fill `{cfg.fusion.hole_fill}`), its noise terms set "
             f"to each preset's; the goals are judged on the shipped prompt's row (**{shipped}**).", "",
             "Chamfer: mean of both directions' mean nearest-neighbour distances to the GT surface (sampled on a 2x "
             "finer grid), median / mean over objects (an object with no cloud counts as inf in the median and is "
             "left out of the mean: its share is the no-cloud column); acc: % of the cloud's points within 10 mm "
             "of the GT surface; compl: % of GT surface within 5 / 10 mm of the cloud; grasp: parallel-jaw grasp "
             "across the thinnest horizontal axis; sensor-only: objects whose prediction failed the plausibility "
             "test (fused from their own readings). Inpainting in whole millimetres (`fusion.inpaint_mm`). Ratios: "
             "of medians over the same objects, with paired-bootstrap 95% intervals.", "",
             f"## Goals ({met} of {len(goal_rows)} met)", ""]
    combos = sorted({(e["set"], e["sensor"]) for e in summary})
    for set_, sensor in combos:
        lines += [f"### {set_}, {sensor}", "", *goal_lines(goal_rows, set_, sensor), ""]
    lines += ["## Tables", ""]
    for set_, sensor in combos:
        lines += [f"### {set_}, {sensor}", "", markdown(summary, set_, sensor), ""]
    lines += ["## Figures", "", *[f"![{f.name}]({f.name})" for f in figs], ""]
    (out / "summary.md").write_text("\n".join(lines))
    write_results_json({k: v for k, v in result.items() if k != "clouds"}, out / "results.json")
    return out / "summary.md"


def write_results_json(result: dict, path: Path) -> None:
    """results.json: measured values to 4 decimals, one row per line (tens of thousands of rows stay a few MB);
    the config exactly as run (a rounded noise term would not reproduce the figures)."""
    clean = {k: _clean(v, None if k == "config" else 4) for k, v in result.items()}
    rows = clean.pop("rows", [])
    head = json.dumps(clean, indent=1, default=_json_default)[:-2]  # without the closing brace
    body = ",\n".join(json.dumps(r, default=_json_default) for r in rows)
    path.write_text(f"{head},\n \"rows\": [\n{body}\n]\n}}\n")


def _clean(v, digits: int | None = 4):
    """JSON without NaN / Infinity (not JSON): None; numpy scalars as Python ones, rounded to ``digits``."""
    if isinstance(v, dict):
        return {str(k): _clean(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x, digits) for x in v]
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            return None
        return float(v) if digits is None else round(float(v), digits)
    return v


def _json_default(v):
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, tuple):
        return list(v)
    return str(v)
