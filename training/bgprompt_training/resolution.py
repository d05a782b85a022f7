"""``bgprompt eval-resolution``: object depth at the frame's full resolution, before and after issue 29.

The network predicts depth at its input size (128 x 128 for ``mini``); the estimator brings it to the frame.
Before issue 29 that was a bilinear resize that kept only pixels whose four network samples all lay on the object
(``upsample: bilinear``); now it is a joint bilateral upsampling guided by the colour image, from the object's own
samples, with every object pixel in the network's view given a depth (``upsample: joint-bilateral``,
bgprompt_core/frame/upsample.py). Both run on the same frames, at full resolution, against the ground truth:

- ``tabletop``: `bgprompt render tabletop` frames (480 x 480, 2-5 objects of 3-12 cm at 0.4-1.2 m), every
  object of at least ``min_pixels`` pixels, by its instance label;
- ``real meshes``: `bgprompt render objects --meshes` of pybullet's scanned / modelled objects (512 x 512), the
  out-of-distribution set of docs/RESULTS.md at 4x the network's resolution.

Two sources of network-resolution depth:
- ``network``: `mini` with the 1-BG prompt; its relative depth is fitted to the ground truth per object (scale and
  shift, robust) on the pixels both methods cover, so both are judged on the same alignment footing;
- ``oracle``: the ground truth itself averaged onto the network's grid (each network pixel the mean depth of the
  object's pixels under it, a far wall elsewhere): what a perfect network would hand the upsampling, so the
  upsampling's own error shows, in metres.

Metrics: coverage of the mask; error on thin parts (object pixels within ``band`` px of the silhouette: rims,
handles, legs) and inside; Chamfer distance and completeness of the object's cloud against the finely sampled
ground-truth surface (bgprompt_core.evaluation.cloud_metrics). Thin parts are judged two ways: the z error on the pixels a
method gives depth to (on all it covers, and on the pixels both cover), and the distance from every true thin-part
point to the nearest point of the method's cloud (``thin-part distance``): a method that leaves the rim out scores
by how far its nearest point is, not by not being asked.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from bgprompt_core.evaluation import cloud_metrics as cm
from bgprompt_core.rgbd.alignment import fit_to_sensor
from bgprompt_core.method.config import ConfigError
from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator
from bgprompt_core.frame.views import Letterbox
from bgprompt_core.geometry import backproject_np
from bgprompt_core.frame.masks import split_mask

from .resolution_report import markdown as _markdown

METHODS = {"before": "bilinear", "after": "joint-bilateral"}
MAX_POINTS = 40000  # per cloud in the Chamfer distance (a fixed random subset)
FAR = 100.0  # the oracle's depth off the object: any of it inside the mask would show as a huge error


@dataclass(frozen=True)
class ResolutionConfig:
    """``bgprompt eval-resolution``.

    Args:
        model (str, default "mini"): the frozen depth network.
        prompt (str, default "1bg"): its prompt.
        count (int, default 24): frames per data set.
        tabletop_size (int, default 480): side of the tabletop renders.
        mesh_size (int, default 512): side of the real-mesh renders.
        min_pixels (int, default 150): objects with fewer mask pixels are left out.
        band (int, default 3): thin parts: object pixels within this many pixels of the silhouette.
        sigma_color (float, default 100.0): the joint bilateral colour kernel (EstimatorConfig.upsample_sigma_color).
        figure_objects (int, default 4): objects in the before / after figure.
    """

    model: str = "mini"
    prompt: str = "1bg"
    count: int = 24
    tabletop_size: int = 480
    mesh_size: int = 512
    min_pixels: int = 150
    band: int = 3
    sigma_color: float = 100.0
    figure_objects: int = 4

    def __post_init__(self) -> None:
        if self.count < 1 or self.min_pixels < 1 or self.band < 1 or self.figure_objects < 0:
            raise ConfigError("count, min_pixels and band must be >= 1, figure_objects >= 0")


class OracleBackend:
    """A backend whose "network" returns the ground truth on the network's grid (set per frame by ``frame``)."""

    name = "oracle"

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self.depth: np.ndarray | None = None

    def frame(self, gt: np.ndarray, binaries: list[np.ndarray]) -> None:
        h, w = gt.shape
        lb = Letterbox(h, w, *self.size)
        (top, left), (rh, rw) = lb.offset, lb.resized
        out = np.full((len(binaries),) + tuple(self.size), FAR, np.float32)
        for k, b in enumerate(binaries):
            pair = np.stack([np.where(b, gt, 0), b], -1).astype(np.float32)
            small = cv2.resize(pair, (rw, rh), interpolation=cv2.INTER_AREA)
            on = small[..., 1] > 1e-6
            out[k, top:top + rh, left:left + rw][on] = small[..., 0][on] / small[..., 1][on]
        self.depth = out

    def run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        assert self.depth is not None and len(self.depth) == len(image)
        return self.depth


def _frames(root: Path, kind: str, count: int, min_pixels: int):
    """(rgb, K, gt depth, instance labels uint16) per frame; the labels hold the objects to score only."""
    shard_files = sorted(root.glob("shard-*.npz"))
    n = 0
    for f in shard_files:
        z = np.load(f)
        for i in range(len(z["rgb"])):
            if n >= count:
                return
            if kind == "tabletop":
                ids = z["instance"][i]
                labels = np.where(ids >= 5, ids, 0).astype(np.uint16)  # 1-4: floor, walls, table
            else:
                labels = z["mask"][i].astype(np.uint16)
            counts = np.bincount(labels.ravel())
            small = np.nonzero((counts < min_pixels) & (counts > 0))[0]
            labels[np.isin(labels, small)] = 0
            if labels.any():
                n += 1
                yield z["rgb"][i], z["K"][i], z["depth"][i], labels


def _band(binary: np.ndarray, band: int) -> np.ndarray:
    """Object pixels within ``band`` px of the silhouette (distance to the nearest non-object pixel <= band)."""
    padded = np.pad(binary.astype(np.uint8), 1)  # the frame's edge is no silhouette: pad with the object itself
    padded[0], padded[-1], padded[:, 0], padded[:, -1] = padded[1], padded[-2], padded[:, 1], padded[:, -2]
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return binary & (dist <= band)


def _object_rows(results: dict, gt: np.ndarray, labels: np.ndarray, K: np.ndarray, source: str, band: int) -> list:
    rows = []
    for oid in results["before"].object_ids:
        obj = (labels == oid) & (gt > 0)
        if obj.sum() < 16:
            continue
        thin = _band(obj, band)
        common = obj & results["before"].valid & results["after"].valid
        surface = _subsample(cm.surface_samples(gt, obj, K), MAX_POINTS)
        tree = cKDTree(surface)  # one per object, shared by the methods
        for name, res in results.items():
            pred = np.where(res.valid & obj & (res.instance == oid), res.depth, np.nan)
            if source == "network":  # relative depth: scale and shift to the ground truth on the common pixels
                fit = fit_to_sensor(np.nan_to_num(pred, nan=0.0), gt, common, "scale-shift")
                if fit is None:
                    continue
                pred = fit.scale * pred + fit.shift
            has = np.isfinite(pred)
            err = np.abs(pred - gt) * 1e3
            cloud = _subsample(backproject_np(pred.astype(np.float32), K)[has], MAX_POINTS)
            ce = _chamfer(cloud, surface, tree)
            # thin parts as a grasp planner meets them: each true thin-part point's distance to the nearest point it
            # is given (a missing rim counts by how far the nearest given point is, not by being left out)
            gt_thin = backproject_np(np.where(thin, gt, np.nan).astype(np.float32), K)[thin]
            to_cloud = cKDTree(cloud).query(gt_thin, k=1)[0] * 1e3 if len(cloud) else np.full(len(gt_thin), 1e3)
            rows.append({"source": source, "method": name, "object": int(oid), "pixels": int(obj.sum()),
                         "covered": int((has & obj).sum()), "band_pixels": int(thin.sum()),
                         "band_covered": int((has & thin).sum()),
                         "band_err_sum": float(err[has & thin].sum()), "band_common_err_sum":
                             float(err[thin & common].sum()), "band_common": int((thin & common).sum()),
                         "inner_err_sum": float(err[has & obj & ~thin].sum()), "inner": int((has & obj & ~thin).sum()),
                         "band_cloud_sum": float(to_cloud.sum()),
                         "chamfer_mm": ce["chamfer_mm"], "completeness_5mm": ce["completeness_5mm"]})
    return rows


def _subsample(points: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of the points, the same ones for the same input (Chamfer of 100k-point objects in seconds)."""
    if len(points) <= n:
        return points
    return points[np.random.default_rng(0).choice(len(points), n, replace=False)]


def _chamfer(pred: np.ndarray, gt: np.ndarray, gt_tree) -> dict:
    """``cloud_metrics.cloud_errors`` (Chamfer mm, completeness within 5 mm) with the ground truth's tree given."""
    if len(pred) == 0:
        return {"chamfer_mm": np.inf, "completeness_5mm": 0.0}
    to_gt = gt_tree.query(pred, k=1)[0] * 1e3
    to_pred = cKDTree(pred).query(gt, k=1)[0] * 1e3
    return {"chamfer_mm": float(0.5 * (to_gt.mean() + to_pred.mean())),
            "completeness_5mm": float(100 * (to_pred <= 5.0).mean())}


def _summary(rows: list, source: str, method: str) -> dict:
    r = [x for x in rows if x["source"] == source and x["method"] == method]
    s = lambda k: sum(x[k] for x in r)  # noqa: E731
    return {"objects": len(r), "coverage": 100 * s("covered") / max(s("pixels"), 1),
            "band_coverage": 100 * s("band_covered") / max(s("band_pixels"), 1),
            "band_err_mm": s("band_err_sum") / max(s("band_covered"), 1),
            "band_common_err_mm": s("band_common_err_sum") / max(s("band_common"), 1),
            "inner_err_mm": s("inner_err_sum") / max(s("inner"), 1),
            "band_cloud_mm": s("band_cloud_sum") / max(s("band_pixels"), 1),
            "chamfer_mm": float(np.median([x["chamfer_mm"] for x in r])) if r else np.nan,
            "completeness_5mm": float(np.median([x["completeness_5mm"] for x in r])) if r else np.nan}


def _crop(img: np.ndarray, box: tuple[slice, slice], size: int = 160) -> np.ndarray:
    c = img[box]
    s = size / max(c.shape[:2])
    c = cv2.resize(c, (max(1, round(c.shape[1] * s)), max(1, round(c.shape[0] * s))), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((size, size, 3), np.uint8)
    out[:c.shape[0], :c.shape[1]] = c
    return out


def _colour(depth: np.ndarray, valid: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((np.nan_to_num(depth) - lo) / max(hi - lo, 1e-9), 0, 1)
    col = cv2.cvtColor(cv2.applyColorMap(((1 - t) * 255).astype(np.uint8), cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    col[~valid] = 0
    return col


def _figure_tile(rgb, gt, obj, per_source: dict) -> np.ndarray:
    """RGB | ground truth | before / after (network, aligned) | before / after (oracle), cropped to the object."""
    ys, xs = np.nonzero(obj)
    m = 4
    box = (slice(max(ys.min() - m, 0), ys.max() + m + 1), slice(max(xs.min() - m, 0), xs.max() + m + 1))
    lo, hi = np.percentile(gt[obj], [1, 99])
    tiles = [_crop(rgb, box), _crop(_colour(gt, obj, lo, hi), box)]
    for source in ("network", "oracle"):
        for name in ("before", "after"):
            d = per_source[source][name]
            ok = obj & np.isfinite(d)
            col = _colour(d, ok, lo, hi)
            col[obj & ~ok] = (255, 255, 255)  # mask pixels without depth: white
            tiles.append(_crop(col, box))
    return np.concatenate(tiles, 1)


def evaluate(cfg: ResolutionConfig, data: dict[str, Path], out_md: Path) -> dict:
    est = {name: ObjectDepthEstimator(EstimatorConfig(model=cfg.model, prompt=cfg.prompt, upsample=method,
                                                      upsample_sigma_color=cfg.sigma_color))
           for name, method in METHODS.items()}
    oracle = OracleBackend(est["after"].size)
    est_oracle = {name: ObjectDepthEstimator(EstimatorConfig(upsample=method, upsample_sigma_color=cfg.sigma_color),
                                             backend=oracle, spec=est["after"].spec, model=None)
                  for name, method in METHODS.items()}
    summary, figure_rows, all_rows = {}, [], {}
    for set_name, root in data.items():
        kind = "tabletop" if set_name == "tabletop" else "objects"
        rows, candidates = [], []
        frames = list(_frames(root, kind, cfg.count, cfg.min_pixels))
        for f, (rgb, K, gt, labels) in enumerate(tqdm(frames, desc=f"eval-resolution {set_name}")):
            objects = split_mask(labels, 0.5, est["after"].cfg.min_object_pixels, est["after"].cfg.max_objects)
            oracle.frame(gt, [o.binary for o in objects])
            net = {name: e.estimate(rgb, K, labels) for name, e in est.items()}
            orc = {name: e.estimate(rgb, K, labels) for name, e in est_oracle.items()}
            new_rows = _object_rows(net, gt, labels, K, "network", cfg.band) + \
                _object_rows(orc, gt, labels, K, "oracle", cfg.band)
            rows += [{**r, "frame": f} for r in new_rows]
            # the figure: per set, the objects with the most thin parts (silhouette band / pixels)
            scored = [(_band(o.binary, cfg.band).sum() / o.pixels, o) for o in objects if o.pixels >= 1500]
            if scored and cfg.figure_objects:
                score, best = max(scored, key=lambda so: so[0])
                oid = best.id
                obj = (labels == oid) & (gt > 0)
                per = {"network": {}, "oracle": {}}
                for name in METHODS:
                    for source, res in (("network", net[name]), ("oracle", orc[name])):
                        d = np.where(res.instance == oid, res.depth, np.nan)
                        if source == "network":
                            fit = fit_to_sensor(np.nan_to_num(d), gt, obj & net["before"].valid & net["after"].valid,
                                                "scale-shift")
                            d = fit.scale * d + fit.shift if fit else d * np.nan
                        per[source][name] = d
                candidates.append((score, _figure_tile(rgb, gt, obj, per)))
        all_rows[set_name] = rows
        candidates.sort(key=lambda c: -c[0])
        figure_rows += [tile for _, tile in candidates[:max(1, cfg.figure_objects // len(data))]]
        summary[set_name] = {source: {name: _summary(rows, source, name) for name in METHODS}
                             for source in ("network", "oracle")}
    out_md.parent.mkdir(parents=True, exist_ok=True)
    png = out_md.with_suffix(".png")
    if figure_rows:
        from .figures import write_png

        write_png(png, np.concatenate(figure_rows, 0))
    (out_md.with_suffix(".json")).write_text(json.dumps({"config": cfg.__dict__, "summary": summary}, indent=2) + "\n")
    out_md.write_text(_markdown(cfg, summary, png.name if figure_rows else None))
    return summary


def prepare(cache: Path, cfg: ResolutionConfig, wheel: str | None = None) -> dict[str, Path]:
    """Render the two sets into ``cache`` unless they are there (the real meshes from the pybullet wheel)."""
    from .assets import real_meshes
    from .render.generate import RenderConfig
    from .render.store import render_dataset

    sets = {"tabletop": cache / f"tabletop_{cfg.tabletop_size}", "real meshes": cache / f"meshes_{cfg.mesh_size}"}
    if not (sets["tabletop"] / "manifest.json").is_file():
        render_dataset(RenderConfig(kind="tabletop", size=cfg.tabletop_size, seed=500,
                                    families=("primitive", "superquadric", "lathe")), sets["tabletop"], cfg.count)
    if not (sets["real meshes"] / "manifest.json").is_file():
        meshes = cache / "real_meshes"
        if not meshes.is_dir():
            real_meshes(meshes, wheel)
        render_dataset(RenderConfig(size=cfg.mesh_size, seed=500, meshes=str(meshes), mesh_up="z"),
                       sets["real meshes"], cfg.count)
    return sets


def run_cli(args: argparse.Namespace) -> int:
    """``bgprompt eval-resolution`` (flags: training/bgprompt_training/cli/evaluation.py)."""
    cfg = ResolutionConfig(model=args.model, prompt=args.prompt, count=args.count, sigma_color=args.sigma_color)
    data = prepare(Path(args.cache), cfg, args.wheel)
    summary = evaluate(cfg, data, Path(args.out))
    for set_name, per_source in summary.items():
        for source, per_method in per_source.items():
            for name, s in per_method.items():
                print(f"{set_name:12s} {source:8s} {name:7s} coverage {s['coverage']:5.1f}%  thin {s['band_coverage']:5.1f}%"
                      f"  thin distance {s['band_cloud_mm']:6.2f} mm  thin err {s['band_err_mm']:6.2f} mm (common "
                      f"{s['band_common_err_mm']:6.2f})  "
                      f"Chamfer {s['chamfer_mm']:6.2f} mm")
    print(f"-> {args.out}")
    return 0
