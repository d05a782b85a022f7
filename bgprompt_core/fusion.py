"""Fusing an object's predicted depth with an RGB-D sensor that fails on it (metres in, metres out).

The pilot (shared/notes/pilot-sensor-fusion.md) showed the trap: a robust fit on the object's sensor
pixels locks onto the table seen THROUGH a transparent object. So, per object:

1. **Support plane**: RANSAC on the sensor's 3-D points in a ring around the object's mask (the table).
2. **See-through test**: an object point lies in front of the support plane along its pixel's ray, so a
   reading at or beyond the plane (``z_sensor >= z_plane - tol``) was seen through the object.
3. **Scale**: from the object's remaining readings when there are enough of them (robust fit,
   ``alignment.fit_to_sensor``); otherwise from the **support contact**: the object stands on the plane,
   so the largest scale that keeps every object pixel in front of the plane, ``min(z_plane / pred)``
   (a low quantile over the silhouette's rim, for noise), touches it where it rests. Exact for objects
   whose resting edge is visible (boxes, cylinders seen from above); biased a few per cent high for
   rounded bottoms, whose contact point is hidden.
4. **Fill** (``fusion='fill'``): sensor readings consistent with the aligned prediction (within a
   band that widens with the prediction's own shape error) are kept bit-exact; holes, see-through and
   outlying readings get the aligned prediction plus the
   sensor-minus-prediction residual spread from the kept pixels (normalized convolution), so the filled
   region meets the kept one without a seam.

Hand-written RANSAC: the installable alternatives either fit z = f(x, y) (scikit-learn's RANSACRegressor:
ill-posed for planes seen at a grazing angle) or pull a 300 MB dependency (Open3D) for a 20-line loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .alignment import fit_to_sensor
from .config import ConfigError
from .sensor_model import PRESETS, depth_edges

SOURCE_NONE, SOURCE_SENSOR, SOURCE_PREDICTED = 0, 1, 2  # per-pixel origin of a fused depth
FUSIONS = ("none", "fill")


@dataclass(frozen=True)
class FusionConfig:
    """How a prediction is fused with an RGB-D sensor's depth (``fuse_object``; metres and pixels).

    Args:
        ring (int, default 15): px, width of the ring around the mask where the support plane is sought.
        plane_tol (float, default 0.006): m, RANSAC inlier distance to the plane.
        plane_iterations (int, default 200): RANSAC iterations.
        min_plane_inliers (int, default 50): fewer inliers: no support plane.
        see_through_tol (float, default 0.005): m (plus 3 sensor sigmas): readings this close to the plane or
            beyond it were seen through the object.
        min_object_fraction (float, default 0.25): of the object's pixels; with fewer reliable readings the
            scale comes from the object's contact with the plane.
        consistency (float, default 0.010): m; readings farther than this from the aligned prediction are
            rejected (and filled).
        contact_quantile (float, default 0.1): of the silhouette's z_plane / prediction ratios (its rim rests
            on the plane).
        residual_sigma (float, default 6.0): px, spread of the residual correction into filled pixels.
        noise_coeff (float, default: the d435-like preset's): sensor sigma = noise_coeff * z^2.
        edge_jump (float, default 0.03): relative depth step that makes a sensor pixel a depth edge.
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
    noise_coeff: float = PRESETS["d435-like"].sigma(1.0)
    edge_jump: float = 0.03

    def __post_init__(self) -> None:
        for name in ("ring", "plane_tol", "plane_iterations", "min_plane_inliers", "consistency",
                     "residual_sigma"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"fusion {name} must be > 0")
        if not 0 < self.min_object_fraction <= 1 or not 0 <= self.contact_quantile < 0.5:
            raise ConfigError("fusion min_object_fraction must lie in (0, 1], contact_quantile in [0, 0.5)")


@dataclass(frozen=True)
class FusionReport:
    """What fusion used for one object; fractions are of the object's pixels unless said otherwise."""

    scale: float
    shift: float
    scale_from: str  # "object" (its reliable readings) | "support-contact" | "none"
    coverage: float  # object pixels with a sensor reading
    see_through: float  # object pixels whose reading lies at or beyond the support plane
    inliers: float  # of the reliable readings: kept by the robust fit
    kept: float  # object pixels whose fused depth is the sensor's, bit-exact
    plane_inliers: int  # ring points on the support plane (0: no plane found)

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def fit_plane(points: np.ndarray, tol: float, iterations: int, rng: np.random.Generator,
              min_inliers: int) -> tuple[np.ndarray, float, int] | None:
    """RANSAC plane ``n . p + d = 0`` (unit n, d > 0: the camera on the positive side), refined by SVD."""
    pts = points[np.isfinite(points).all(1)]
    if len(pts) < max(min_inliers, 3):
        return None
    best, best_count = None, 0
    for _ in range(iterations):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-12:
            continue
        n /= norm
        count = int((np.abs(pts @ n - n @ a) < tol).sum())
        if count > best_count:
            best, best_count = (n, -float(n @ a)), count
    if best is None or best_count < min_inliers:
        return None
    n, d = best
    inl = pts[np.abs(pts @ n + d) < tol]
    centre = inl.mean(0)
    n = np.linalg.svd(inl - centre, full_matrices=False)[2][-1]
    d = -float(n @ centre)
    if d < 0:
        n, d = -n, -d
    return n, d, int((np.abs(pts @ n + d) < tol).sum())


def plane_depth(rays: np.ndarray, n: np.ndarray, d: float) -> np.ndarray:
    """z at which each ray (z = 1 rays, (..., 3)) meets the plane; inf where it does not, in front."""
    denom = rays @ n
    with np.errstate(divide="ignore", invalid="ignore"):
        z = -d / denom
    return np.where(np.isfinite(z) & (z > 0), z, np.inf)


def _spread(values: np.ndarray, weight: np.ndarray, sigma: float, exclude_self: bool = False) -> np.ndarray:
    """Normalized convolution: the weighted Gaussian average of ``values`` at every pixel (NaN: no support);
    with ``exclude_self`` each pixel's own value is left out of its average."""
    num = cv2.GaussianBlur(np.where(weight, values, 0).astype(np.float32), (0, 0), sigma)
    den = cv2.GaussianBlur(weight.astype(np.float32), (0, 0), sigma)
    if exclude_self:
        delta = np.zeros((9, 9), np.float32)
        delta[4, 4] = 1
        g0 = float(cv2.GaussianBlur(delta, (0, 0), sigma)[4, 4])
        num = num - g0 * np.where(weight, values, 0)
        den = den - g0 * weight
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 1e-3, num / den, np.nan)


def fuse_object(pred: np.ndarray, sensor: np.ndarray, obj: np.ndarray, rays: np.ndarray, ring: np.ndarray,
                cfg: FusionConfig, align: str = "scale", fill: bool = True,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, FusionReport | None]:
    """One object's metric depth (NaN off it) and per-pixel source, over a region of interest.

    pred: relative depth (NaN where the network gave none); sensor: metres, 0/NaN = no reading; obj: the
    object's mask; rays: (H, W, 3) z = 1 rays of these pixels; ring: mask of support-plane candidates.
    Returns (depth, source, report); report is None when no scale could be found (depth all NaN).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    sens = np.where(np.isfinite(sensor) & (sensor > 0), sensor, 0.0).astype(np.float64)
    has = obj & (sens > 0)
    n_obj = max(int(obj.sum()), 1)
    plane = fit_plane((rays[ring & (sens > 0)] * sens[ring & (sens > 0), None]), cfg.plane_tol,
                      cfg.plane_iterations, rng, cfg.min_plane_inliers)
    if plane is not None:
        zp = plane_depth(rays, plane[0], plane[1])
        through = has & (sens >= zp - (cfg.see_through_tol + 3 * cfg.noise_coeff * zp**2))
    else:
        zp, through = None, np.zeros_like(has)
    reliable = has & ~through
    ok_pred = obj & np.isfinite(pred) & (pred > 0)
    fit = None
    if reliable.sum() >= cfg.min_object_fraction * n_obj:
        fit = fit_to_sensor(pred, sens, reliable & ok_pred, align)
    scale_from = "object" if fit is not None else "none"
    scale, shift, inliers = (fit.scale, fit.shift, fit.inliers) if fit is not None else (np.nan, 0.0, 0.0)
    if fit is None and zp is not None:  # the silhouette's lowest ratios: where the object rests on the plane
        rim = ok_pred & ~cv2.erode(ok_pred.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        ratio = (zp / pred)[rim & np.isfinite(zp)]
        if len(ratio) >= 3:
            scale, shift, scale_from = float(np.quantile(ratio, cfg.contact_quantile)), 0.0, "support-contact"
    depth = np.full(pred.shape, np.nan, np.float32)
    source = np.zeros(pred.shape, np.uint8)
    report_base = dict(coverage=float(has.sum() / n_obj), see_through=float(through.sum() / n_obj),
                       plane_inliers=plane[2] if plane is not None else 0)
    if not np.isfinite(scale) or scale <= 0:
        return depth, source, None
    aligned = (scale * pred + shift).astype(np.float64)
    ok_pred &= aligned > 0
    if not fill:
        depth[ok_pred] = aligned[ok_pred]
        source[ok_pred] = SOURCE_PREDICTED
        return depth, source, FusionReport(scale, shift, scale_from, inliers=inliers, kept=0.0, **report_base)
    # A reading is kept unless it is an outlier against the aligned prediction: its residual lies outside a band
    # of `consistency` + 3 sensor sigmas, widened to 3 robust sigmas of the object's residuals where the
    # network's shape is off by more than that (shape error must not cost true readings). Readings flagged as
    # seen through are trusted only when the object's own readings gave the scale (at the resting edge a true
    # reading looks like the plane). Where the network gave nothing, a reading not seen through stays.
    trusted = has if scale_from == "object" else reliable
    resid = sens - np.where(ok_pred, aligned, np.nan)
    r = resid[trusted & ok_pred]
    centre = float(np.median(r)) if len(r) else 0.0
    spread = 3 * 1.4826 * float(np.median(np.abs(r - centre))) if len(r) else 0.0
    strict = cfg.consistency + 3 * cfg.noise_coeff * sens**2
    # at the sensor's own depth edges a reading may be a flying pixel: there the band is not widened
    edges = depth_edges(sens, cfg.edge_jump)
    band = np.where(edges, strict, np.maximum(strict, spread))
    consistent = np.abs(np.nan_to_num(resid - centre, nan=np.inf)) <= band
    # a reading the prediction disputes stays when it continues its neighbours' readings (a flying pixel
    # between two surfaces, or a lone spike, does not): the network may be wrong where the sensor is right
    local = _spread(sens, trusted & ~edges, 1.0, exclude_self=True)
    consistent |= np.abs(np.nan_to_num(sens - local, nan=np.inf)) <= strict
    keep = (trusted & consistent) | (reliable & ~ok_pred)
    correction = _spread(sens - aligned, keep & ok_pred, cfg.residual_sigma)
    filled = np.where(np.isfinite(correction), aligned + correction, aligned)
    target = ok_pred & ~keep
    depth[target] = filled[target]
    source[target] = SOURCE_PREDICTED
    depth[keep] = sensor[keep]  # bit-exact: the sensor's own float32 value
    source[keep] = SOURCE_SENSOR
    bad = target & ~(depth > 0)
    depth[bad], source[bad] = np.nan, SOURCE_NONE
    return depth, source, FusionReport(scale, shift, scale_from, inliers=inliers, kept=float(keep.sum() / n_obj),
                                       **report_base)


def ring_mask(obj: np.ndarray, width: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Pixels within ``width`` of the object, outside it (and outside ``exclude``, e.g. other objects)."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    ring = cv2.dilate(obj.astype(np.uint8), k).astype(bool) & ~obj
    return ring & ~exclude if exclude is not None else ring
