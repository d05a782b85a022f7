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
   sigmas) and their robust residual spread is within ``max_residual`` + 3 sigmas. Otherwise the object falls
   back to **sensor-only**: its own readings, small interior holes interpolated from their neighbourhood.
   Either way an object with readings never comes out empty, and the report says which path it took and why.
5. **Fill** (``fusion='fill'``): readings consistent with the aligned prediction are kept bit-exact, at the support
   plane too (a flat object, the resting edge: the table seen through glass lies behind the prediction). The band is
   ``consistency`` + 3 sigmas, widened in front of the surface to 3 robust sigmas of the residuals where the
   network's shape is off (shape error must not cost true readings); readings BEHIND the predicted surface
   (reflections, like see-through readings for glass) get no widening. A disputed reading is still kept when it
   lies in one smooth patch of readings (no step above the band between neighbours) with consistent ones: true
   surfaces are continuous, a reflection blob or a flying pixel is not. A reading at a depth edge is a flying pixel
   only when no chain of agreeing neighbours on the object links it to a reading off the edges (``flying_pixels``):
   the silhouette's readings step to the table, and true readings step to a flying pixel beside them, yet continue
   the object's surface. Then holes are filled:
   ``hole_fill='hybrid'``: small interior holes (not touching the silhouette, at most ``max_interior_hole`` of
   the object) from the kept readings around them (``cv2.inpaint`` in millimetres), the rest from the aligned
   prediction plus the sensor-minus-prediction residual spread from the kept pixels (normalized convolution,
   so the filled region meets the kept one without a seam); ``hole_fill='prediction'`` fills every hole so.

Hand-written RANSAC: the installable alternatives either fit z = f(x, y) (scikit-learn's RANSACRegressor:
ill-posed for planes seen at a grazing angle) or pull a 300 MB dependency (Open3D) for a 20-line loop.
This module imports no simulator: the noise model and depth edges come from ``depth_noise``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

from bgprompt_core.rgbd.alignment import fit_to_sensor
from bgprompt_core.method.config import ConfigError
from bgprompt_core.rgbd.noise import DepthNoise, depth_edges, stereo_noise
from bgprompt_core.geometry import camera_rays

SOURCE_NONE, SOURCE_SENSOR, SOURCE_PREDICTED, SOURCE_INTERPOLATED = 0, 1, 2, 3  # per-pixel origin of a fused depth
from bgprompt_core.settings import FUSIONS  # noqa: E402,F401  (its home now; still importable here)
HOLE_FILLS = ("hybrid", "prediction")
D435_NOISE = stereo_noise(430.0, 0.050, 0.08)  # the d435-like camera: sigma = 0.0037 z^2 (m)


@dataclass(frozen=True)
class FusionConfig:
    """How a prediction is fused with an RGB-D sensor's depth (``fuse_object``; metres and pixels).

    Args:
        ring (int, default 15): px, width of the ring around the mask where the support plane is sought.
        plane_tol (float, default 0.006): m (plus 3 sensor sigmas at the reading's depth), RANSAC inlier distance
            to the plane.
        plane_iterations (int, default 200): RANSAC iterations.
        min_plane_inliers (int, default 50): fewer inliers: no support plane.
        see_through_tol (float, default 0.005): m (plus 3 sensor sigmas): readings this close to the plane or
            beyond it were seen through the object.
        min_object_fraction (float, default 0.25): of the object's pixels; with fewer reliable readings the
            scale comes from the object's contact with the plane.
        consistency (float, default 0.010): m (plus 3 sensor sigmas); readings farther than this from the
            aligned prediction are disputed.
        contact_quantile (float, default 0.1): of the silhouette's z_plane / prediction ratios (its rim rests
            on the plane).
        residual_sigma (float, default 6.0): px, spread of the residual correction into filled pixels.
        noise_floor, noise_linear, noise_quadratic (float, default the d435-like camera's: 0, 0, 0.0037): the
            sensor's RMS error ``floor + linear z + quadratic z^2`` (m); set them to your camera's.
        edge_jump (float, default 0.03): relative depth step that makes a sensor pixel a depth edge.
        min_agreement (float, default 0.5): share of the object's reliable readings the aligned prediction must
            agree with; below it the object falls back to sensor-only.
        max_residual (float, default 0.015): m (plus 3 sensor sigmas); a larger robust residual spread of the
            readings around the aligned prediction falls back to sensor-only.
        hole_fill (str, default "hybrid"): "hybrid" (small interior holes from the sensor's neighbourhood, the
            rest from the prediction) or "prediction" (every hole from the prediction).
        max_interior_hole (float, default 0.02): of the object's pixels: the largest hole "hybrid" interpolates.
    """

    ring: int = 15
    plane_tol: float = 0.006
    plane_iterations: int = 200
    min_plane_inliers: int = 50
    see_through_tol: float = 0.005
    min_object_fraction: float = 0.25
    consistency: float = 0.010
    contact_quantile: float = 0.1
    residual_sigma: float = 6.0
    noise_floor: float = D435_NOISE.floor
    noise_linear: float = D435_NOISE.linear
    noise_quadratic: float = D435_NOISE.quadratic
    edge_jump: float = 0.03
    min_agreement: float = 0.5
    max_residual: float = 0.015
    hole_fill: str = "hybrid"
    max_interior_hole: float = 0.02

    def __post_init__(self) -> None:
        for name in ("ring", "plane_tol", "plane_iterations", "min_plane_inliers", "consistency",
                     "residual_sigma", "max_residual", "edge_jump"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"fusion {name} must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.min_object_fraction <= 1 or not 0 <= self.contact_quantile < 0.5:
            raise ConfigError("fusion min_object_fraction must lie in (0, 1], contact_quantile in [0, 0.5)")
        if not 0 <= self.min_agreement <= 1 or not 0 <= self.max_interior_hole <= 1:
            raise ConfigError("fusion min_agreement and max_interior_hole must lie in [0, 1]")
        if self.hole_fill not in HOLE_FILLS:
            raise ConfigError(f"fusion hole_fill must be one of {HOLE_FILLS}, got {self.hole_fill!r}")
        self.noise  # validates the noise terms

    @property
    def noise(self) -> DepthNoise:
        return DepthNoise(self.noise_floor, self.noise_linear, self.noise_quadratic)

    @staticmethod
    def for_noise(noise: DepthNoise, **kw) -> "FusionConfig":
        """A config whose sensor noise is ``noise`` (e.g. ``sensor_model.PRESETS[name].noise``)."""
        return FusionConfig(noise_floor=noise.floor, noise_linear=noise.linear, noise_quadratic=noise.quadratic, **kw)


FUSION_FIELDS = tuple(f.name for f in fields(FusionConfig))
FUSION_HELP = {  # one line per field, for the node's parameter descriptions
    "ring": "px, width of the ring around each object where the support plane is sought",
    "plane_tol": "m (+3 sensor sigmas): RANSAC inlier distance to the support plane",
    "plane_iterations": "RANSAC iterations of the support plane",
    "min_plane_inliers": "fewer ring points on the plane: no support plane",
    "see_through_tol": "m (+3 sensor sigmas): readings this close to the support plane or beyond were seen through",
    "min_object_fraction": "share of an object's pixels with reliable readings below which the scale comes from "
                           "its contact with the support plane",
    "consistency": "m (+3 sensor sigmas): readings farther from the aligned prediction are disputed",
    "contact_quantile": "quantile of the silhouette's plane/prediction ratios used as the support-contact scale",
    "residual_sigma": "px, spread of the sensor-minus-prediction correction into filled pixels",
    "noise_floor": "m, the sensor's RMS error at any depth (sigma = floor + linear z + quadratic z^2)",
    "noise_linear": "the sensor's RMS error per metre of depth (time of flight: ~0.001)",
    "noise_quadratic": "1/m, the sensor's stereo RMS error term subpixel / (focal_px * baseline) (D435: 0.0037)",
    "edge_jump": "relative depth step that makes a sensor pixel a depth edge (flying pixels)",
    "min_agreement": "share of an object's readings the aligned prediction must agree with, else sensor-only",
    "max_residual": "m (+3 sensor sigmas): a larger robust residual spread around the prediction: sensor-only",
    "hole_fill": "hybrid (small interior holes from the sensor's neighbourhood, the rest from the prediction) or "
                 "prediction (every hole from the prediction)",
    "max_interior_hole": "share of an object's pixels: the largest hole hybrid fill interpolates from the sensor",
}


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


def plane_band(points: np.ndarray, tol: float, noise: DepthNoise | None) -> np.ndarray:
    """Per point, the distance to the plane within which a reading is the plane's: ``tol`` plus 3 sigmas of the
    sensor's noise at the point's depth (a camera reads its table as noisily as its objects)."""
    return tol + (3 * noise.sigma(points[:, 2]) if noise is not None else np.zeros(len(points)))


def fit_plane(points: np.ndarray, tol: float, iterations: int, rng: np.random.Generator,
              min_inliers: int, noise: DepthNoise | None = None) -> tuple[np.ndarray, float, int] | None:
    """RANSAC plane ``n . p + d = 0`` (unit n, d > 0: the camera on the positive side), refined by SVD; inliers
    lie within ``plane_band`` of it (``tol`` alone without ``noise``)."""
    pts = points[np.isfinite(points).all(1)]
    if len(pts) < max(min_inliers, 3):
        return None
    band = plane_band(pts, tol, noise)
    # all hypotheses at once: normals of random triplets, inlier counts from one (points x hypotheses) product
    tri = pts[rng.integers(0, len(pts), (iterations, 3))]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normals, axis=1)
    good = norm > 1e-12
    best, best_count = None, 0
    if good.any():
        normals, tri = normals[good] / norm[good, None], tri[good]
        offsets = -(normals * tri[:, 0]).sum(1)
        counts = np.zeros(len(normals), np.int64)
        for start in range(0, len(pts), 4096):  # bounded memory for large rings
            chunk = slice(start, start + 4096)
            counts += (np.abs(pts[chunk] @ normals.T + offsets) < band[chunk, None]).sum(0)
        k = int(np.argmax(counts))
        best, best_count = (normals[k], float(offsets[k])), int(counts[k])
    if best is None or best_count < min_inliers:
        return None
    n, d = best
    inl = pts[np.abs(pts @ n + d) < band]
    centre = inl.mean(0)
    n = np.linalg.svd(inl - centre, full_matrices=False)[2][-1]
    d = -float(n @ centre)
    if d < 0:
        n, d = -n, -d
    return n, d, int((np.abs(pts @ n + d) < band).sum())


def plane_depth(rays: np.ndarray, n: np.ndarray, d: float) -> np.ndarray:
    """z at which each ray (z = 1 rays, (..., 3)) meets the plane; inf where it does not, in front."""
    denom = rays @ n
    with np.errstate(divide="ignore", invalid="ignore"):
        z = -d / denom
    return np.where(np.isfinite(z) & (z > 0), z, np.inf)


def _spread(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalized convolution: the weighted Gaussian average of ``values`` at every pixel (NaN: no support)."""
    num = cv2.GaussianBlur(np.where(weight, values, 0).astype(np.float32), (0, 0), sigma)
    den = cv2.GaussianBlur(weight.astype(np.float32), (0, 0), sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 1e-3, num / den, np.nan)


def inpaint_mm(depth: np.ndarray, holes: np.ndarray, radius: int = 3, method: str = "ns") -> np.ndarray:
    """Fill ``holes`` of a metric depth image (m, 0 = none) with ``cv2.inpaint`` in whole MILLIMETRES (uint16:
    OpenCV 5.0's Telea returns garbage on float metres, opencv/opencv#25404, and is off by ~1 mm on float mm);
    the holes go as their own uint8 mask (zeros in the depth are not holes to it). Returns metres (float32)."""
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    z = np.nan_to_num(depth, nan=0.0)
    # every pixel without a reading near a hole is unknown too: cv2.inpaint would take its 0 as a depth
    near = cv2.dilate(holes.astype(np.uint8), np.ones((2 * radius + 3,) * 2, np.uint8)).astype(bool)
    mask = holes | (near & ~(z > 0))
    mm = np.clip(np.round(z * 1000), 0, 65535).astype(np.uint16)
    out = cv2.inpaint(mm, mask.astype(np.uint8), radius, flag).astype(np.float32) / np.float32(1000)
    return np.where(holes, out, z).astype(np.float32)


def smooth_patches(sens: np.ndarray, valid: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Labels (int32, 0 = none) of the patches of ``valid`` readings where no 4-neighbour step exceeds ``tol``:
    a pixel with such a step to a valid neighbour is a patch border and belongs to none."""
    step = np.zeros(sens.shape, bool)
    for ax in (0, 1):
        a = np.take(sens, range(1, sens.shape[ax]), axis=ax)
        b = np.take(sens, range(0, sens.shape[ax] - 1), axis=ax)
        va = np.take(valid, range(1, sens.shape[ax]), axis=ax)
        vb = np.take(valid, range(0, sens.shape[ax] - 1), axis=ax)
        t = np.take(tol, range(1, sens.shape[ax]), axis=ax)
        jump = va & vb & (np.abs(a - b) > t)
        if ax == 0:
            step[1:] |= jump
            step[:-1] |= jump
        else:
            step[:, 1:] |= jump
            step[:, :-1] |= jump
    return cv2.connectedComponents((valid & ~step).astype(np.uint8), connectivity=4)[1]


def _agree_shifts(z: np.ndarray, inside: np.ndarray, jump: float):
    """Per 4-neighbour direction: (destination slice, source slice, agree) where ``agree`` marks pixel pairs that are
    both ``inside`` with readings and differ by at most ``jump`` of the nearer depth (no depth edge between them)."""
    h, w = z.shape
    for dst, src in (((slice(None), slice(1, None)), (slice(None), slice(None, w - 1))),
                     ((slice(None), slice(None, w - 1)), (slice(None), slice(1, None))),
                     ((slice(1, None), slice(None)), (slice(None, h - 1), slice(None))),
                     ((slice(None, h - 1), slice(None)), (slice(1, None), slice(None)))):
        a, b = z[dst], z[src]
        both = inside[dst] & inside[src] & (a > 0) & (b > 0)
        yield dst, src, both & (np.abs(a - b) <= jump * np.minimum(a, b))


def flying_pixels(z: np.ndarray, edges: np.ndarray, inside: np.ndarray, jump: float, reach: int = 4) -> np.ndarray:
    """The readings of ``edges`` (``depth_edges``) that continue no surface of ``inside``: no chain of at most
    ``reach`` agreeing 4-neighbours inside (``_agree_shifts``) links them to a reading off the edges. A true reading
    at the silhouette (a step to the table) or beside a flying pixel continues its surface and is no flying pixel;
    a depth between two surfaces, alone or in a short run of its like, is."""
    anchored = inside & (z > 0) & ~edges
    for _ in range(reach):
        grown = anchored.copy()
        for dst, src, agree in _agree_shifts(z, inside, jump):
            grown[dst] |= agree & anchored[src]
        if np.array_equal(grown, anchored):
            break
        anchored = grown
    return edges & inside & ~anchored


def interior_holes(holes: np.ndarray, obj: np.ndarray, max_pixels: float) -> np.ndarray:
    """Hole pixels in components (8-connected) that touch nothing outside ``obj`` and hold <= max_pixels."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(holes.shape, bool)
    outside = cv2.dilate((~obj).astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=1).astype(bool)
    touching = np.unique(lab[outside & holes])
    small = stats[:, cv2.CC_STAT_AREA] <= max_pixels
    small[0] = False
    small[touching] = False
    return small[lab]


def _sensor_only(sens, sensor, has, reliable, edges, strict, obj, cfg, n_obj, base, reason):
    """The fallback: the object's readings (flying pixels at depth edges dropped unless they continue a smooth
    patch), small interior holes interpolated in mm. Readings at the support plane stay when they are a minority
    (a bowl's or a lying box's bottom touches the table); a majority is the table seen through glass."""
    trusted = has if (has & ~reliable).sum() < 0.5 * has.sum() or not reliable.any() else reliable
    patches = smooth_patches(sens, trusted, strict)
    keep = trusted & (~edges | (patches > 0))
    depth = np.full(sens.shape, np.nan, np.float32)
    source = np.zeros(sens.shape, np.uint8)
    depth[keep], source[keep] = sensor[keep], SOURCE_SENSOR
    small = interior_holes(obj & ~keep, obj, cfg.max_interior_hole * n_obj)
    if small.any():
        filled = inpaint_mm(np.where(keep, sens, 0), small)
        ok = small & (filled > 0)
        depth[ok], source[ok] = filled[ok], SOURCE_INTERPOLATED
    rep = FusionReport(np.nan, 0.0, "sensor-only", inliers=np.nan, kept=float(keep.sum() / n_obj),
                       interpolated=float((source == SOURCE_INTERPOLATED).sum() / n_obj), reason=reason, **base)
    return depth, source, rep


def fuse_object(pred: np.ndarray, sensor: np.ndarray, obj: np.ndarray, rays: np.ndarray, ring: np.ndarray,
                cfg: FusionConfig, align: str = "scale-shift", fill: bool = True,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, FusionReport | None]:
    """One object's metric depth (NaN off it) and per-pixel source, over a region of interest.

    pred: relative depth (NaN where the network gave none); sensor: metres, 0/NaN = no reading; obj: the
    object's mask; rays: (H, W, 3) z = 1 rays of these pixels; ring: mask of support-plane candidates.
    Returns (depth, source, report); report is None only when there is neither a reading on the object nor a
    support plane to take a scale from (depth all NaN).
    """
    rng = np.random.default_rng(0) if rng is None else rng
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
    reliable = has & ~through
    ok_pred = obj & np.isfinite(pred) & (pred > 0)
    strict = cfg.consistency + 3 * noise.sigma(sens)  # the band a reading must fall in, per pixel
    # at the sensor's own depth edges a reading may be a flying pixel, unless it continues the object's surface
    edges = flying_pixels(sens, depth_edges(sens, cfg.edge_jump), obj, cfg.edge_jump)
    base = dict(coverage=float(has.sum() / n_obj), see_through=float(through.sum() / n_obj),
                plane_inliers=plane[2] if plane is not None else 0)
    fit = None
    n_reliable = int((reliable & ok_pred).sum())
    if n_reliable >= 20 and (n_reliable >= cfg.min_object_fraction * n_obj or plane is None):
        fit = fit_to_sensor(pred, sens, reliable & ok_pred, align, tol=strict)
    scale, shift, inliers, scale_from = np.nan, 0.0, 0.0, "none"
    if fit is not None:
        scale, shift, inliers, scale_from = fit.scale, fit.shift, fit.inliers, "object"
    elif zp is not None:  # the silhouette's lowest ratios: where the object rests on the plane
        rim = ok_pred & ~cv2.erode(ok_pred.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        ratio = (zp / pred)[rim & np.isfinite(zp)]
        if len(ratio) >= 3:
            scale, shift, scale_from = float(np.quantile(ratio, cfg.contact_quantile)), 0.0, "support-contact"
    # plausibility of the aligned prediction against the object's own readings
    reason = ""
    agreement = spread_mm = np.nan
    if scale_from == "none":
        reason = (f"{n_reliable} reliable sensor pixels (of {n_obj}) and no support plane to take a scale from"
                  if has.any() else "")
    elif not scale > 0:
        reason = f"the fit's scale is {scale:.3g} (a prediction anti-correlated with the readings)"
    else:
        aligned = scale * pred + shift
        if not (aligned[ok_pred] > 0).mean() >= 0.5:
            reason = "the aligned prediction lies behind the camera"
        elif scale_from == "object":
            r = (sens - aligned)[reliable & ok_pred]
            centre = float(np.median(r))
            agreement = float((np.abs(r - centre) <= strict[reliable & ok_pred]).mean())
            spread_mm = 1e3 * 1.4826 * float(np.median(np.abs(r - centre)))
            bound = cfg.max_residual + 3 * float(noise.sigma(np.median(sens[reliable])))
            if agreement < cfg.min_agreement:
                reason = f"{100 * agreement:.0f}% of the readings agree with the aligned prediction " \
                         f"(< {100 * cfg.min_agreement:.0f}%)"
            elif spread_mm > 1e3 * bound:
                reason = f"residual spread {spread_mm:.1f} mm > {1e3 * bound:.1f} mm"
    if reason or scale_from == "none":
        if not has.any():
            return np.full(pred.shape, np.nan, np.float32), np.zeros(pred.shape, np.uint8), None
        return _sensor_only(sens, sensor, has, reliable, edges, strict, obj, cfg, n_obj, base, reason)
    stats = dict(inliers=inliers, agreement=agreement, residual_mm=spread_mm)
    aligned = (scale * pred + shift).astype(np.float64)
    ok_pred &= aligned > 0
    depth = np.full(pred.shape, np.nan, np.float32)
    source = np.zeros(pred.shape, np.uint8)
    if not fill:
        depth[ok_pred] = aligned[ok_pred]
        source[ok_pred] = SOURCE_PREDICTED
        return depth, source, FusionReport(scale, shift, scale_from, kept=0.0, predicted=float(ok_pred.sum() / n_obj),
                                           **stats, **base)
    # Readings flagged as seen through are trusted only when the object's own readings gave the scale (at the
    # resting edge a true reading looks like the plane). Where the network gave nothing, a reading not seen
    # through stays.
    trusted = has if scale_from == "object" else reliable
    resid = sens - np.where(ok_pred, aligned, np.nan)
    r = resid[trusted & ok_pred]
    centre = float(np.median(r)) if len(r) else 0.0
    near = r[np.abs(r - centre) <= cfg.max_residual + np.median(strict)]  # gross outliers do not widen the band
    spread = 3 * 1.4826 * float(np.median(np.abs(near - centre))) if len(near) else 0.0
    d = np.nan_to_num(resid - centre, nan=np.inf)
    front = np.where(edges, strict, np.maximum(strict, spread))  # widened in front, never at depth edges
    # a reading the aligned prediction agrees with is the object's own, at the support plane too (a flat object, a
    # tray's floor, the resting edge): the table seen through glass lies behind the prediction
    consistent = has & ok_pred & (d <= strict) & (-d <= front)
    behind = trusted & ok_pred & (d > strict)
    # a disputed reading stays when it lies in one smooth patch with consistent ones (the network may be wrong
    # where the sensor is right); a flying pixel (at a depth edge) or a reflection blob (a step behind) does not
    patches = smooth_patches(sens, trusted & ~edges, strict)
    seeded = np.zeros(patches.max() + 1, bool)
    seeded[np.unique(patches[consistent])] = True
    seeded[0] = False
    keep = consistent | (trusted & seeded[patches]) | (reliable & ~ok_pred & ~edges)
    correction = _spread(sens - aligned, keep & ok_pred, cfg.residual_sigma)
    filled = np.where(np.isfinite(correction), aligned + correction, aligned)
    target = ok_pred & ~keep
    depth[target] = filled[target]
    source[target] = SOURCE_PREDICTED
    if cfg.hole_fill == "hybrid":
        small = interior_holes(obj & ~keep, obj, cfg.max_interior_hole * n_obj)
        if small.any():
            interp = inpaint_mm(np.where(keep, sens, 0), small)
            ok = small & (interp > 0)
            depth[ok], source[ok] = interp[ok], SOURCE_INTERPOLATED
    depth[keep] = sensor[keep]  # bit-exact: the sensor's own float32 value
    source[keep] = SOURCE_SENSOR
    bad = (source != SOURCE_NONE) & ~(depth > 0)
    depth[bad], source[bad] = np.nan, SOURCE_NONE
    return depth, source, FusionReport(
        scale, shift, scale_from, kept=float(keep.sum() / n_obj), behind=float((behind & ~keep).sum() / n_obj),
        interpolated=float((source == SOURCE_INTERPOLATED).sum() / n_obj),
        predicted=float((source == SOURCE_PREDICTED).sum() / n_obj), **stats, **base)


def ring_mask(obj: np.ndarray, width: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Pixels within ``width`` of the object, outside it (and outside ``exclude``, e.g. other objects)."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    ring = cv2.dilate(obj.astype(np.uint8), k).astype(bool) & ~obj
    return ring & ~exclude if exclude is not None else ring


def fuse_frame(pred: np.ndarray, labels: np.ndarray, ids: list[int], sensor: np.ndarray, K: np.ndarray,
               cfg: FusionConfig, align: str = "scale-shift", fill: bool = True
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
                                  ring_mask(o, cfg.ring, occupied[roi]), cfg, align, fill)
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


PARAM_PREFIX = "fusion_"


def fusion_config_from_params(params: dict) -> FusionConfig:
    """A FusionConfig from ROS-style parameters ``fusion_<field>`` (the node's, a params file's); fields not
    given keep their defaults; other keys are ignored."""
    kw = {name: params[PARAM_PREFIX + name] for name in FUSION_FIELDS if PARAM_PREFIX + name in params}
    return FusionConfig(**kw)


def fusion_params(cfg: FusionConfig) -> dict:
    """The ROS-style parameters of a FusionConfig (inverse of ``fusion_config_from_params``)."""
    return {PARAM_PREFIX + name: getattr(cfg, name) for name in FUSION_FIELDS}
