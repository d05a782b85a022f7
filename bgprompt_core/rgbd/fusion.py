"""Fusing an object's predicted depth with an RGB-D sensor that fails on it (metres in, metres out).

The pilot (shared/notes/pilot-sensor-fusion.md) and issue 24's independent check showed the traps: a robust fit
on the object's sensor pixels locks onto the table seen THROUGH a transparent object; metal reads reflections
well behind its surface; on concave or ambiguous shapes (pans, bowls, lying boxes) a relative network can be
anti-correlated with the truth. So, per object:

1. **Support plane**: RANSAC on the sensor's 3-D points in a ring around the object's mask (the table); a reading
   is the table's within ``plane_tol`` plus 3 sensor sigmas at its depth.
2. **See-through test**: an object point lies in front of the support plane along its pixel's ray, so a
   reading at or beyond the plane (``z_sensor >= z_plane - tol``) was seen through the object.
3. **Scale**: from the object's remaining readings when there are enough of them: a consensus (RANSAC) fit
   refined by least squares (``alignment.fit_to_sensor``); otherwise from the **support contact**: the object
   stands on the plane, so the largest scale that keeps every object pixel in front of the plane,
   ``min(z_plane / pred)`` (a low quantile over the silhouette's rim, for noise), touches it where it rests.
4. **Plausibility** (never worse than the sensor): the aligned prediction is used only if its scale is
   positive, at least ``min_agreement`` of the readings agree with it (within ``consistency`` + 3 sensor
   sigmas) and their robust residual spread is within ``max_residual`` + 3 sigmas; placed by the support contact
   (no readings to test), its depth range along the rays is at most ``max_extent_ratio`` times its width (real
   objects: 1.8 at most). Otherwise the object falls back to **sensor-only**: its own readings, small interior
   holes interpolated from their neighbourhood.
   Either way an object with readings never comes out empty, and the report says which path it took and why.
5. **Fill** (``fusion='fill'``): readings consistent with the aligned prediction are kept bit-exact, at the support
   plane too (a flat object, the resting edge: the table seen through glass lies behind the prediction). The band is
   ``consistency`` + 3 sigmas, widened in front of the surface to 3 robust sigmas of the residuals where the
   network's shape is off (shape error must not cost true readings); readings BEHIND the predicted surface
   (reflections, like see-through readings for glass) get no widening. A disputed reading is still kept when it
   lies in one smooth patch of readings with consistent ones (between neighbours, no step above the band that the
   surface's own slope does not continue: a steep side seen at a grazing angle is one patch): true surfaces are
   continuous, a reflection blob or a flying pixel is not. A reading at a depth edge is a flying pixel
   only when no chain of agreeing neighbours on the object links it to a reading off the edges (``flying_pixels``):
   the silhouette's readings step to the table, and true readings step to a flying pixel beside them, yet continue
   the object's surface. Then holes are filled:
   ``hole_fill='hybrid'``: small interior holes (not touching the silhouette, at most ``max_interior_hole`` of
   the object) from the kept readings around them (``cv2.inpaint`` in millimetres), the rest from the aligned
   prediction plus the sensor-minus-prediction residual spread from the kept pixels (normalized convolution,
   so the filled region meets the kept one without a seam); ``hole_fill='prediction'`` fills every hole so.

The steps live in their own modules: the support plane in ``rgbd.planes``, depth edges and flying pixels in
``rgbd.edges``, hole filling in ``rgbd.holes``, the scale fit in ``rgbd.alignment``; this module chains them per
object (``fuse_object``) and per frame (``fuse_frame``). It imports no simulator: the noise model comes from
``rgbd.noise``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bgprompt_core.geometry import camera_rays
from bgprompt_core.rgbd.alignment import fit_to_sensor
from bgprompt_core.rgbd.edges import depth_edges, flying_pixels, smooth_patches
from bgprompt_core.rgbd.fusion_config import (D435_NOISE, FUSION_FIELDS, FUSION_HELP, FUSIONS, HOLE_FILLS,  # noqa: F401
                                              PARAM_PREFIX, FusionConfig, fusion_config_from_params, fusion_params)
from bgprompt_core.rgbd.holes import inpaint_mm, interior_holes, normalized_convolution
from bgprompt_core.rgbd.planes import fit_plane, plane_depth, ring_mask

SOURCE_NONE, SOURCE_SENSOR, SOURCE_PREDICTED, SOURCE_INTERPOLATED = 0, 1, 2, 3  # per-pixel origin of a fused depth
MIN_FIT_READINGS = 20  # fewer reliable readings take no scale fit, and cannot stand for an object alone


@dataclass(frozen=True)
class FusionReport:
    """What fusion used for one object; fractions are of the object's pixels unless said otherwise."""

    scale: float
    shift: float
    scale_from: str  # "object" (its reliable readings) | "support-contact" | "sensor-only" (fallback)
    coverage: float  # object pixels with a sensor reading
    see_through: float  # object pixels whose reading lies at or beyond the support plane
    inliers: float  # of the reliable readings: kept by the robust fit
    kept: float  # object pixels whose fused depth is the sensor's, bit-exact
    plane_inliers: int  # ring points on the support plane (0: no plane found)
    agreement: float = float("nan")  # of the reliable readings: within the band of the aligned prediction
    residual_mm: float = float("nan")  # robust spread of the readings around the aligned prediction
    behind: float = 0.0  # object pixels whose reading lies behind the predicted surface (rejected: reflections)
    interpolated: float = 0.0  # object pixels filled from the sensor's neighbourhood
    predicted: float = 0.0  # object pixels filled from the prediction
    reason: str = ""  # why the prediction was not used ("" when it was)

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class _Readings:
    """One object's sensor readings against its support plane: what every later step of ``fuse_object`` reads."""

    obj: np.ndarray  # the object's mask
    sens: np.ndarray  # float64 m, 0 = no reading
    has: np.ndarray  # object pixels with a reading
    reliable: np.ndarray  # ... not read at or beyond the support plane (seen through the object)
    ok_pred: np.ndarray  # object pixels with a positive prediction
    strict: np.ndarray  # per pixel, the band a reading must fall in (consistency + 3 sensor sigmas)
    edges: np.ndarray  # flying pixels: readings at depth edges that continue no surface of the object
    zp: np.ndarray | None  # per pixel, the support plane's depth (None: no plane)
    n_obj: int  # object pixels (at least 1)
    base: dict  # the report's coverage, see_through and plane_inliers


def _readings(pred: np.ndarray, sensor: np.ndarray, obj: np.ndarray, rays: np.ndarray, ring: np.ndarray,
              cfg: FusionConfig, rng: np.random.Generator) -> _Readings:
    """Steps 1 and 2: the support plane from the ring's readings, and which object readings it sees through."""
    sens = np.where(np.isfinite(sensor) & (sensor > 0), sensor, 0.0).astype(np.float64)
    has = obj & (sens > 0)
    n_obj = max(int(obj.sum()), 1)
    noise = cfg.noise
    plane = fit_plane((rays[ring & (sens > 0)] * sens[ring & (sens > 0), None]), cfg.plane_tol,
                      cfg.plane_iterations, rng, cfg.min_plane_inliers, noise)
    if plane is not None:
        zp = plane_depth(rays, plane[0], plane[1])
        through = has & (sens >= zp - (cfg.see_through_tol + 3 * noise.sigma(zp)))
    else:
        zp, through = None, np.zeros_like(has)
    strict = cfg.consistency + 3 * noise.sigma(sens)
    # at the sensor's own depth edges a reading may be a flying pixel, unless it continues the object's surface
    edges = flying_pixels(sens, depth_edges(sens, cfg.edge_jump), obj, cfg.edge_jump)
    base = dict(coverage=float(has.sum() / n_obj), see_through=float(through.sum() / n_obj),
                plane_inliers=plane[2] if plane is not None else 0)
    return _Readings(obj, sens, has, has & ~through, obj & np.isfinite(pred) & (pred > 0), strict, edges, zp,
                     n_obj, base)


@dataclass(frozen=True)
class _Scale:
    """Step 3's outcome: ``scale * pred + shift`` and where it came from."""

    scale: float = np.nan
    shift: float = 0.0
    inliers: float = 0.0
    scale_from: str = "none"  # "object" | "support-contact" | "none" (no scale found)


def _scale(pred: np.ndarray, r: _Readings, cfg: FusionConfig, align: str) -> _Scale:
    """Step 3: the scale from the object's reliable readings when there are enough, else from the support contact."""
    n_reliable = int((r.reliable & r.ok_pred).sum())
    if n_reliable >= MIN_FIT_READINGS and (n_reliable >= cfg.min_object_fraction * r.n_obj or r.zp is None):
        fit = fit_to_sensor(pred, r.sens, r.reliable & r.ok_pred, align, tol=r.strict)
        if fit is not None:
            return _Scale(fit.scale, fit.shift, fit.inliers, "object")
    if r.zp is not None:  # the silhouette's lowest ratios: where the object rests on the plane
        rim = r.ok_pred & ~cv2.erode(r.ok_pred.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        ratio = (r.zp / pred)[rim & np.isfinite(r.zp)]
        if len(ratio) >= 3:
            return _Scale(float(np.quantile(ratio, cfg.contact_quantile)), 0.0, 0.0, "support-contact")
    return _Scale()


def extent_ratio(z: np.ndarray, sel: np.ndarray, rays: np.ndarray) -> float:
    """The 3-D points ``rays * z`` of ``sel``: their depth range over their widest lateral range (5-95% each,
    a lateral range of at least 1 mm); NaN with fewer than 10 points."""
    if np.count_nonzero(sel) < 10:
        return float("nan")
    zz = z[sel]
    lo, hi = np.quantile(np.stack([zz, rays[..., 0][sel] * zz, rays[..., 1][sel] * zz]), [0.05, 0.95], axis=1)
    span = hi - lo
    return float(span[0] / max(span[1], span[2], 1e-3))


def _implausible(pred: np.ndarray, r: _Readings, cfg: FusionConfig, sc: _Scale, rays: np.ndarray
                 ) -> tuple[str, float, float]:
    """Step 4: (why the aligned prediction is not used, "" when it is; agreement; residual spread mm) against
    the object's own readings, or, placed by its support contact, against the shape of an object."""
    agreement = spread_mm = np.nan
    if sc.scale_from == "none":
        n_reliable = int((r.reliable & r.ok_pred).sum())
        return (f"{n_reliable} reliable sensor pixels (of {r.n_obj}) and no support plane to take a scale from"
                if r.has.any() else ""), agreement, spread_mm
    if not sc.scale > 0:
        return (f"the fit's scale is {sc.scale:.3g} (a prediction anti-correlated with the readings)", agreement,
                spread_mm)
    aligned = sc.scale * pred + sc.shift
    if not (aligned[r.ok_pred] > 0).mean() >= 0.5:
        return "the aligned prediction lies behind the camera", agreement, spread_mm
    if sc.scale_from != "object":  # no readings to test against: the placed shape must be an object's
        ratio = extent_ratio(aligned, r.ok_pred & (aligned > 0), rays)
        if ratio > cfg.max_extent_ratio:
            return (f"the support-contact placement is {ratio:.1f}x deeper along the rays than wide "
                    f"(> {cfg.max_extent_ratio:g}x: no object's shape)"), agreement, spread_mm
        return "", agreement, spread_mm
    sel = r.reliable & r.ok_pred
    res = (r.sens - aligned)[sel]
    centre = float(np.median(res))
    agreement = float((np.abs(res - centre) <= r.strict[sel]).mean())
    spread_mm = 1e3 * 1.4826 * float(np.median(np.abs(res - centre)))
    bound = cfg.max_residual + 3 * float(cfg.noise.sigma(np.median(r.sens[r.reliable])))
    if agreement < cfg.min_agreement:
        return (f"{100 * agreement:.0f}% of the readings agree with the aligned prediction "
                f"(< {100 * cfg.min_agreement:.0f}%)"), agreement, spread_mm
    if spread_mm > 1e3 * bound:
        return f"residual spread {spread_mm:.1f} mm > {1e3 * bound:.1f} mm", agreement, spread_mm
    return "", agreement, spread_mm


def _flat(r: _Readings, relief: float) -> bool:
    """Whether the object's readings off the support plane lie within ``relief`` m in front of it along the rays
    (their 95th percentile), i.e. the object is too flat for a reading at the plane to be far from its surface."""
    if r.zp is None or relief <= 0 or not r.reliable.any():
        return False
    return float(np.quantile((r.zp - r.sens)[r.reliable], 0.95)) <= relief


def _sensor_only(sensor: np.ndarray, r: _Readings, cfg: FusionConfig, reason: str):
    """The fallback: the object's readings (flying pixels at depth edges dropped unless they continue a smooth
    patch), small interior holes interpolated in mm. Readings at the support plane stay when they are a minority
    (a bowl's or a lying box's bottom touches the table); a majority is the table seen through glass, unless fewer
    than ``MIN_FIT_READINGS`` lie off it (glass and a flat object cannot be told apart: a handful of pixels is no
    cloud) or the object is flat (``flat_relief``: a tray's bottom; were it glass, a reading at the plane would be
    off by no more than the object's relief). Then the object keeps every reading, as the raw sensor would."""
    has, reliable, obj = r.has, r.reliable, r.obj
    through_majority = (has & ~reliable).sum() >= 0.5 * has.sum()
    tall = reliable.sum() >= MIN_FIT_READINGS and not _flat(r, cfg.flat_relief)
    trusted = reliable if through_majority and tall else has
    patches = smooth_patches(r.sens, trusted, r.strict)
    keep = trusted & (~r.edges | (patches > 0))
    depth = np.full(r.sens.shape, np.nan, np.float32)
    source = np.zeros(r.sens.shape, np.uint8)
    depth[keep], source[keep] = sensor[keep], SOURCE_SENSOR
    small = interior_holes(obj & ~keep, obj, cfg.max_interior_hole * r.n_obj)
    if small.any():
        inpainted = inpaint_mm(np.where(keep, r.sens, 0), small)
        ok = small & (inpainted > 0)
        depth[ok], source[ok] = inpainted[ok], SOURCE_INTERPOLATED
    rep = FusionReport(np.nan, 0.0, "sensor-only", inliers=np.nan, kept=float(keep.sum() / r.n_obj),
                       interpolated=float((source == SOURCE_INTERPOLATED).sum() / r.n_obj), reason=reason, **r.base)
    return depth, source, rep


def _aligned_only(r: _Readings, aligned: np.ndarray, usable: np.ndarray, sc: _Scale, stats: dict):
    """``keep_readings=False``: the aligned prediction wherever it is positive; no reading kept."""
    depth = np.full(aligned.shape, np.nan, np.float32)
    source = np.zeros(aligned.shape, np.uint8)
    depth[usable] = aligned[usable]
    source[usable] = SOURCE_PREDICTED
    return depth, source, FusionReport(sc.scale, sc.shift, sc.scale_from, kept=0.0,
                                       predicted=float(usable.sum() / r.n_obj), **stats, **r.base)


def _kept_readings(r: _Readings, aligned: np.ndarray, usable: np.ndarray, scale_from: str,
                   cfg: FusionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Step 5's test: (the readings kept bit-exact, the rejected ones behind the predicted surface)."""
    # Readings flagged as seen through are trusted only when the object's own readings gave the scale (at the
    # resting edge a true reading looks like the plane). Where the network gave nothing, a reading not seen
    # through stays.
    has, reliable, strict, edges = r.has, r.reliable, r.strict, r.edges
    trusted = has if scale_from == "object" else reliable
    resid = r.sens - np.where(usable, aligned, np.nan)
    res = resid[trusted & usable]
    centre = float(np.median(res)) if len(res) else 0.0
    near = res[np.abs(res - centre) <= cfg.max_residual + np.median(strict)]  # gross outliers do not widen the band
    spread = 3 * 1.4826 * float(np.median(np.abs(near - centre))) if len(near) else 0.0
    d = np.nan_to_num(resid - centre, nan=np.inf)
    front = np.where(edges, strict, np.maximum(strict, spread))  # widened in front, never at depth edges
    # a reading the aligned prediction agrees with is the object's own, at the support plane too (a flat object, a
    # tray's floor, the resting edge): the table seen through glass lies behind the prediction
    consistent = has & usable & (d <= strict) & (-d <= front)
    behind = trusted & usable & (d > strict)
    # a disputed reading stays when it lies in one smooth patch with consistent ones (the network may be wrong
    # where the sensor is right); a flying pixel (at a depth edge) or a reflection blob (a step behind) does not
    # patch; readings at the support plane count when their patch holds a consistent reading off the plane (a flat
    # object or a lying box continues its surface down to the table; the table seen through glass steps from it)
    patches = smooth_patches(r.sens, has & ~edges, strict)
    seeds = consistent if scale_from == "object" else consistent & reliable
    return consistent | _in_seeded_patch(patches, seeds) | (reliable & ~usable & ~edges), behind


def _in_seeded_patch(patches: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The pixels of the smooth patches (``smooth_patches`` labels, 0 = none) that hold a ``seeds`` pixel."""
    seeded = np.zeros(patches.max() + 1, bool)
    seeded[np.unique(patches[seeds])] = True
    seeded[0] = False
    return seeded[patches]


def _keep_readings(sensor: np.ndarray, r: _Readings, aligned: np.ndarray, usable: np.ndarray, sc: _Scale,
                   stats: dict, cfg: FusionConfig):
    """``keep_readings=True`` (step 5): the consistent readings kept bit-exact, the holes filled (``hole_fill``)."""
    keep, behind = _kept_readings(r, aligned, usable, sc.scale_from, cfg)
    depth = np.full(aligned.shape, np.nan, np.float32)
    source = np.zeros(aligned.shape, np.uint8)
    correction = normalized_convolution(r.sens - aligned, keep & usable, cfg.residual_sigma)
    corrected = np.where(np.isfinite(correction), aligned + correction, aligned)
    target = usable & ~keep
    depth[target] = corrected[target]
    source[target] = SOURCE_PREDICTED
    if cfg.hole_fill == "hybrid":
        small = interior_holes(r.obj & ~keep, r.obj, cfg.max_interior_hole * r.n_obj)
        if small.any():
            interp = inpaint_mm(np.where(keep, r.sens, 0), small)
            ok = small & (interp > 0)
            depth[ok], source[ok] = interp[ok], SOURCE_INTERPOLATED
    depth[keep] = sensor[keep]  # bit-exact: the sensor's own float32 value
    source[keep] = SOURCE_SENSOR
    bad = (source != SOURCE_NONE) & ~(depth > 0)
    depth[bad], source[bad] = np.nan, SOURCE_NONE
    n_obj = r.n_obj
    return depth, source, FusionReport(
        sc.scale, sc.shift, sc.scale_from, kept=float(keep.sum() / n_obj), behind=float((behind & ~keep).sum() / n_obj),
        interpolated=float((source == SOURCE_INTERPOLATED).sum() / n_obj),
        predicted=float((source == SOURCE_PREDICTED).sum() / n_obj), **stats, **r.base)


def fuse_object(pred: np.ndarray, sensor: np.ndarray, obj: np.ndarray, rays: np.ndarray, ring: np.ndarray,
                cfg: FusionConfig, align: str = "scale-shift", keep_readings: bool = True,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, FusionReport | None]:
    """One object's metric depth (NaN off it) and per-pixel source, over a region of interest.

    pred: relative depth (NaN where the network gave none); sensor: metres, 0/NaN = no reading; obj: the
    object's mask; rays: (H, W, 3) z = 1 rays of these pixels; ring: mask of support-plane candidates.
    ``keep_readings`` (``fusion='fill'``) keeps the consistent readings and fills the rest (``_keep_readings``);
    without it the object's depth is the aligned prediction (``_aligned_only``).
    Returns (depth, source, report); report is None only when there is neither a reading on the object nor a
    support plane to take a scale from (depth all NaN).
    """
    r = _readings(pred, sensor, obj, rays, ring, cfg, np.random.default_rng(0) if rng is None else rng)
    sc = _scale(pred, r, cfg, align)
    reason, agreement, spread_mm = _implausible(pred, r, cfg, sc, rays)
    if reason or sc.scale_from == "none":
        if not r.has.any():
            return np.full(pred.shape, np.nan, np.float32), np.zeros(pred.shape, np.uint8), None
        return _sensor_only(sensor, r, cfg, reason)
    stats = dict(inliers=sc.inliers, agreement=agreement, residual_mm=spread_mm)
    aligned = (sc.scale * pred + sc.shift).astype(np.float64)
    usable = r.ok_pred & (aligned > 0)
    if keep_readings:
        return _keep_readings(sensor, r, aligned, usable, sc, stats, cfg)
    return _aligned_only(r, aligned, usable, sc, stats)


def fuse_frame(pred: np.ndarray, labels: np.ndarray, ids: list[int], sensor: np.ndarray, K: np.ndarray,
               cfg: FusionConfig, align: str = "scale-shift", keep_readings: bool = True
               ) -> tuple[np.ndarray, np.ndarray, dict[int, FusionReport | None], list[str]]:
    """Every object of a frame: ``pred`` (H, W) relative depth (NaN where none), ``labels`` (H, W) the objects'
    masks by id. Each object is fused over its bounding box grown by the ring; the support plane is sought
    away from every object. Returns (depth m, NaN off the objects; source; report per id; warnings)."""
    h, w = labels.shape
    depth = np.full((h, w), np.nan, np.float32)
    source = np.zeros((h, w), np.uint8)
    occupied = np.isin(labels, ids)
    rays = camera_rays(K, h, w)
    reports: dict[int, FusionReport | None] = {}
    warnings: list[str] = []
    for oid in ids:
        obj = labels == oid
        rows, cols = np.nonzero(obj.any(1))[0], np.nonzero(obj.any(0))[0]
        if not len(rows):
            continue
        roi = (slice(max(rows[0] - cfg.ring, 0), min(rows[-1] + 1 + cfg.ring, h)),
               slice(max(cols[0] - cfg.ring, 0), min(cols[-1] + 1 + cfg.ring, w)))
        o = obj[roi]
        d, src, rep = fuse_object(np.where(o, pred[roi], np.nan), sensor[roi], o, rays[roi],
                                  ring_mask(o, cfg.ring, occupied[roi]), cfg, align, keep_readings)
        reports[oid] = rep
        if rep is None:
            warnings.append(f"object {oid}: no sensor reading on it and no support plane to take a scale from; "
                            f"left out")
            continue
        if rep.scale_from == "sensor-only":
            warnings.append(f"object {oid}: prediction not used ({rep.reason}); sensor readings only")
        elif rep.see_through > 0.3:
            warnings.append(f"object {oid}: {100 * rep.see_through:.0f}% of its pixels read depth at or behind the "
                            f"support plane (seen through it); scale from {rep.scale_from}")
        ok = np.isfinite(d)
        depth[roi][ok] = d[ok]
        source[roi][ok] = src[ok]
    return depth, source, reports, warnings


_MOVED = {"plane_band": "planes", "DepthNoise": "noise", "stereo_noise": "noise"}  # name -> its rgbd module now


def __getattr__(name: str):
    """Names this module no longer uses itself, served from their home in ``rgbd`` with a DeprecationWarning."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    import warnings

    new = f"bgprompt_core.rgbd.{_MOVED[name]}"
    warnings.warn(f"{__name__}.{name} moved to {new}.{name}; import it from there", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(new), name)
