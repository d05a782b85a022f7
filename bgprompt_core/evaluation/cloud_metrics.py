"""What a grasp planner receives, measured in metres: object clouds against the ground-truth surface.

Every function takes (N, 3) float arrays in the camera optical frame (metres) and returns millimetres or
percentages, so tables read directly. Nearest neighbours come from scipy's cKDTree; oriented boxes from
``geometry.oriented_box`` (the node's markers use it too).
"""
from __future__ import annotations

import cv2
import numpy as np

from bgprompt_core.geometry import backproject_np, finite_points, oriented_box, scale_intrinsics


class Surface:
    """A ground-truth surface's points with their k-d tree built once (many clouds are scored against it).

    ``queries``: the points whose distance to a cloud is measured (completeness, Chamfer's GT-to-cloud mean): all
    of them, or a fixed random subset of ``max_queries`` (means over 20k samples move by well under 1%)."""

    def __init__(self, points: np.ndarray, max_queries: int | None = None):
        from scipy.spatial import cKDTree  # lazy: scipy is loaded only once a cloud is scored

        self.points = finite_points(points)
        self.tree = cKDTree(self.points) if len(self.points) else None
        self.queries = self.points
        if max_queries is not None and len(self.points) > max_queries:
            pick = np.random.default_rng(0).choice(len(self.points), max_queries, replace=False)
            self.queries = self.points[np.sort(pick)]

    def __len__(self) -> int:
        return len(self.points)


def nearest(a: np.ndarray, b: "np.ndarray | Surface") -> np.ndarray:
    """Distance (m) from each point of ``a`` to the nearest point of ``b`` (inf when b is empty)."""
    if len(b) == 0:
        return np.full(len(a), np.inf)
    if isinstance(b, Surface):
        return b.tree.query(a, k=1)[0]
    from scipy.spatial import cKDTree

    return cKDTree(b).query(a, k=1)[0]


def cloud_errors(pred: np.ndarray, gt: "np.ndarray | Surface", taus_mm: tuple[float, ...] = (5.0, 10.0)) -> dict:
    """Chamfer (mm, the mean of both directions' mean distances), accuracy and completeness (% within tau).

    accuracy_T: % of predicted points within T mm of the GT surface (are the points ON the object?);
    completeness_T: % of GT points within T mm of a predicted point (is the object covered?).
    An empty prediction scores Chamfer inf, accuracy nan and completeness 0. ``gt``: points, or a ``Surface``
    (its tree reused).
    """
    surface = gt if isinstance(gt, Surface) else Surface(gt)
    pred = finite_points(pred)
    if len(surface) == 0:
        raise ValueError("the ground-truth cloud is empty")
    to_gt = nearest(pred, surface) * 1e3
    to_pred = nearest(surface.queries, pred) * 1e3
    out = {"points": len(pred), "chamfer_mm": float(0.5 * (to_gt.mean() + to_pred.mean())) if len(pred) else np.inf}
    for t in taus_mm:
        out[f"accuracy_{t:g}mm"] = float(100 * (to_gt <= t).mean()) if len(pred) else np.nan
        out[f"completeness_{t:g}mm"] = float(100 * (to_pred <= t).mean())
    return out


def centroid_error_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    pred, gt = finite_points(pred), finite_points(gt)
    return float(np.linalg.norm(pred.mean(0) - gt.mean(0)) * 1e3) if len(pred) else np.inf


def box_extent_error_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute difference of the sorted oriented-box extents (mm)."""
    if len(finite_points(pred)) < 3:
        return np.inf
    return float(np.abs(oriented_box(pred)[2] - oriented_box(gt)[2]).mean() * 1e3)


def parallel_grasp(points: np.ndarray, up: np.ndarray) -> tuple[float, np.ndarray]:
    """(closing width m, grasp centre) of a parallel-jaw grasp across the object's thinnest horizontal axis.

    Horizontal: perpendicular to ``up`` (the support plane's normal). The closing direction is the minor
    principal axis of the points projected onto that plane; width is their extent along it; the centre is
    the middle of the extents along both horizontal axes, at the points' mean height.
    """
    p = finite_points(points)
    if len(p) < 3:
        raise ValueError("a grasp needs at least 3 points")
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    a = np.cross(up, [1.0, 0, 0] if abs(up[0]) < 0.9 else [0, 1.0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    flat = np.stack([p @ a, p @ b], 1)
    evals, evecs = np.linalg.eigh(np.cov(flat.T))
    minor, major = evecs[:, 0], evecs[:, 1]
    across, along = flat @ minor, flat @ major
    mid = minor * (across.min() + across.max()) / 2 + major * (along.min() + along.max()) / 2
    centre = mid[0] * a + mid[1] * b + (p @ up).mean() * up
    return float(across.max() - across.min()), centre


def grasp_errors_mm(pred: np.ndarray, gt: np.ndarray, up: np.ndarray) -> dict:
    if len(finite_points(pred)) < 3:
        return {"grasp_width_mm": np.inf, "grasp_centre_mm": np.inf}
    wp, cp = parallel_grasp(pred, up)
    wg, cg = parallel_grasp(gt, up)
    return {"grasp_width_mm": float(abs(wp - wg) * 1e3), "grasp_centre_mm": float(np.linalg.norm(cp - cg) * 1e3)}


def object_report(pred: np.ndarray, gt_surface: np.ndarray, gt_pixels: np.ndarray, up: np.ndarray) -> dict:
    """Every metric of one object's cloud: distances against the finely sampled ground-truth surface, and the
    centroid, box and grasp computed the same way from both clouds at the image's own pixels (one point per
    pixel, as the prediction: finer samples would weigh the object's interior over its rim)."""
    return {**cloud_errors(pred, gt_surface), "centroid_mm": centroid_error_mm(pred, gt_pixels),
            "box_extent_mm": box_extent_error_mm(pred, gt_pixels), **grasp_errors_mm(pred, gt_pixels, up)}


def surface_samples(depth: np.ndarray, mask: np.ndarray, K: np.ndarray, factor: int = 2,
                    max_step: float = 0.01) -> np.ndarray:
    """GT surface points on a ``factor`` times finer grid than the image, so completeness does not credit a
    cloud for GT points that exist only at its own pixel centres. A fine sample is the bilinear depth where
    the nearest pixel's 3x3 neighbourhood is on the object and smooth (depth range < ``max_step`` m); pixels
    elsewhere (edges, self-occlusions) contribute their own centre once."""
    ok = mask & np.isfinite(depth) & (depth > 0)
    z = np.where(ok, depth, 0).astype(np.float32)
    h, w = z.shape
    k3 = np.ones((3, 3), np.uint8)
    zmax = cv2.dilate(np.where(ok, z, -np.inf).astype(np.float32), k3)
    zmin = -cv2.dilate(np.where(ok, -z, -np.inf).astype(np.float32), k3)
    with np.errstate(over="ignore", invalid="ignore"):  # +-inf where a neighbourhood has no object pixel
        flat = (zmax - zmin) < max_step
    smooth = cv2.erode(ok.astype(np.uint8), k3, borderValue=0).astype(bool) & flat
    size = (w * factor, h * factor)
    fine = cv2.resize(z, size, interpolation=cv2.INTER_LINEAR)
    fine_ok = cv2.resize(smooth.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    Kf = scale_intrinsics(np.asarray(K, np.float64), factor, factor)
    pts = [backproject_np(np.where(fine_ok, fine, np.nan).astype(np.float32), Kf)[fine_ok],
           backproject_np(np.where(ok & ~smooth, z, np.nan).astype(np.float32), K)[ok & ~smooth]]
    return np.concatenate(pts).astype(np.float64)
