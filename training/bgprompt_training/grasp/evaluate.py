"""Scoring object clouds: for each frame, object, sensor preset and method, the cloud against the ground-truth
surface (``bgprompt_core.evaluation.cloud_metrics``); the rows of one or several data sets."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bgprompt_core.evaluation import cloud_metrics as cm
from bgprompt_core.evaluation import sensor_model as sm
from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator
from bgprompt_core.geometry import backproject_np
from bgprompt_core.method.config import ConfigError
from bgprompt_core.rgbd.alignment import least_squares
from bgprompt_core.rgbd.fusion import SOURCE_SENSOR, FusionConfig, fuse_frame, inpaint_mm

from .config import MAX_QUERIES, PREDICTION_FILL, GraspEvalConfig, _prompt_name, fused_name
from .report import goals, summarize


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


class _Methods:
    """The estimators of one evaluation: one relative estimator per prompt (the network runs once per frame and
    prompt; fusion then runs per sensor preset, as the node's estimator would with that sensor)."""

    def __init__(self, cfg: GraspEvalConfig):
        self.cfg = cfg
        base = dict(model=cfg.model, scale="relative", align=cfg.align, recenter=cfg.recenter,
                    local_only=cfg.local_only, max_objects=16, min_object_pixels=cfg.min_pixels)
        self.relative = {p: ObjectDepthEstimator(EstimatorConfig(prompt=p, **base)) for p in cfg.prompts}

    def fusion_for(self, preset: sm.SensorPreset | None) -> FusionConfig:
        """Fusion's settings for a sensor preset: its own noise terms, or the params file's (``fusion_noise``)."""
        if preset is None or self.cfg.fusion_noise == "params":
            return self.cfg.fusion
        return replace(
            self.cfg.fusion, noise_floor=preset.noise.floor, noise_linear=preset.noise.linear,
            noise_quadratic=preset.noise.quadratic)


def _sensor_of(s: dict, name: str, stored_sensor: str, seed: int, index: int) -> tuple[np.ndarray, sm.SensorPreset | None]:
    from ..render.tabletop import resimulate

    if name == "stored" or (name == stored_sensor and "highlight" not in s):
        return s["sensor_depth"], sm.preset(stored_sensor)
    if name == stored_sensor:
        return s["sensor_depth"], sm.preset(name)
    return resimulate(s, name, seed, index), sm.preset(name)


def evaluate_grasp(data: str | Path, cfg: GraspEvalConfig, progress: bool = True, keep_clouds: int = 0,
                   set_name: str | None = None, methods: _Methods | None = None) -> dict:
    """Per-object rows (every sensor preset) and their summary; ``keep_clouds`` clouds per (sensor, material) for
    figures."""
    from ..data.rendered import RenderedDataset
    from ..render.tabletop import object_names

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
    for i in tqdm(range(n), desc=f"eval-grasp {set_name}", unit="frame", disable=not progress):
        s = _read_frame(ds, i)
        ids = frame_objects(s, cfg.min_pixels)
        if not ids:
            continue
        K, gt, inst = s["K"], s["depth"], s["instance"]
        names = object_names(s)
        labels = np.where(np.isin(inst, ids), inst, 0).astype(np.uint16)
        up = s["cam_from_world"][:3, :3] @ np.array([0.0, 1.0, 0.0])  # the table's normal, camera frame
        rel = {p: est.estimate(s["rgb"], K, labels) for p, est in methods.relative.items()}
        per_obj = _frame_truth(s, ids)
        oracle_rows = _oracle_reports(rel[oracle_prompt], per_obj, gt, K, up)
        for sensor_name in cfg.sensors:
            sensor, preset = _sensor_of(s, sensor_name, stored_sensor, seed, i)
            label = stored_sensor if sensor_name == "stored" else sensor_name
            fused = _fused(rel, labels, ids, sensor, K, methods.fusion_for(preset), cfg, oracle_prompt)
            holes = ~(sensor > 0)
            filled = {how: inpaint_mm(sensor, holes, cfg.inpaint_radius, how) for how in ("telea", "ns")}
            for oid, o in per_obj.items():
                clouds_, extra = _object_clouds(o["obj"], oid, sensor, gt, K, labels, preset, filled, fused)
                base = {"set": set_name, "sensor": label, "frame": i, "object": oid, "name": names.get(oid, ""),
                        "material": o["material"], "coverage": float((o["obj"] & (sensor > 0)).sum() / o["obj"].sum())}
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


def _read_frame(ds, i: int) -> dict:
    """Frame ``i`` of a tabletop render with the arrays eval-grasp reads (highlight and objects when stored)."""
    keys = ("instance", "sensor_depth", "material", "cam_from_world", "behind")
    s = {**ds.raw(i), **ds.arrays(i, keys)}
    for extra in ("highlight", "objects"):
        try:
            s.update(ds.arrays(i, (extra,)))
        except KeyError:
            pass
    s["instance"] = s["instance"].astype(np.int32)
    return s


def _frame_truth(s: dict, ids: list[int]) -> dict[int, dict]:
    """Per object: its mask, material and ground truth (surface samples and the truth's pixel cloud)."""
    K, gt, inst = s["K"], s["depth"], s["instance"]
    per_obj = {}
    for oid in ids:
        obj = inst == oid
        per_obj[oid] = dict(obj=obj, material=sm.MATERIALS[int(np.bincount(s["material"][obj]).argmax())],
                            gt_pts=cm.Surface(cm.surface_samples(gt, obj, K), MAX_QUERIES), gt_grid=_points(gt, K, obj & (gt > 0)))
    return per_obj


def _oracle_reports(o_rel, per_obj: dict[int, dict], gt: np.ndarray, K: np.ndarray, up: np.ndarray) -> dict:
    """The oracle: the prediction with scale and shift fitted to the ground truth on each object, scored."""
    oracle_rows = {}
    for oid, o in per_obj.items():
        sel = (o_rel.instance == oid) & np.isfinite(o_rel.depth) & (gt > 0)
        if sel.sum() >= 3:
            a, b = least_squares(o_rel.depth[sel].astype(np.float64), gt[sel].astype(np.float64), "scale-shift")
            oracle_rows[oid] = cm.object_report(_points(a * o_rel.depth + b, K, sel), o["gt_pts"], o["gt_grid"], up)
    return oracle_rows


def _fused(rel: dict, labels: np.ndarray, ids: list[int], sensor: np.ndarray, K: np.ndarray, fcfg: FusionConfig,
           cfg: GraspEvalConfig, oracle_prompt: str) -> dict:
    """Each prompt's prediction fused with the sensor as the node does (and, for the oracle prompt, with the
    prediction filling every hole)."""
    fused = {}
    for p, r in rel.items():
        pred = np.where(r.instance > 0, r.depth, np.nan)
        fused[fused_name(p)] = fuse_frame(pred, labels, ids, sensor, K, fcfg, cfg.align)
        if cfg.compare_fill and p == oracle_prompt:
            fused[fused_name(p) + PREDICTION_FILL] = fuse_frame(
                pred, labels, ids, sensor, K, replace(fcfg, hole_fill="prediction"), cfg.align)
    return fused


def _object_clouds(obj: np.ndarray, oid: int, sensor: np.ndarray, gt: np.ndarray, K: np.ndarray,
                   labels: np.ndarray, preset, filled: dict, fused: dict) -> tuple[dict, dict]:
    """One object's cloud by every method (raw sensor, inpainting, fusion) and the fusion rows' extra columns."""
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
    return clouds_, extra


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
