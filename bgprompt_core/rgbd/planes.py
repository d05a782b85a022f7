"""The support plane an object stands on, from the sensor's 3-D points around it (metres).

Hand-written RANSAC: the installable alternatives either fit z = f(x, y) (scikit-learn's RANSACRegressor:
ill-posed for planes seen at a grazing angle) or pull a 300 MB dependency (Open3D) for a 20-line loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bgprompt_core.errors import ConfigError
from bgprompt_core.rgbd.noise import DepthNoise


@dataclass(frozen=True)
class SupportPlaneSettings:
    """The support-plane test of a config (``FusionConfig``'s and the bag trust rules'): RANSAC (``fit_plane``) on
    the sensor's points in a ring around the object; readings at or beyond the plane were seen through it.

    Args:
        ring (int, default 15): px, width of the ring around the mask where the support plane is sought.
        plane_tol (float, default 0.006): m (plus 3 sensor sigmas at the reading's depth), RANSAC inlier distance.
        plane_iterations (int, default 200): RANSAC iterations.
        min_plane_inliers (int, default 50): fewer inliers: no support plane.
        see_through_tol (float, default 0.005): m (plus 3 sensor sigmas): readings this close to the plane or
            beyond it were seen through the object.
    """

    ring: int = 15
    plane_tol: float = 0.006
    plane_iterations: int = 200
    min_plane_inliers: int = 50
    see_through_tol: float = 0.005

    def check_plane(self, what: str) -> None:
        """Raise ConfigError naming ``what`` (e.g. "fusion") and the field that is out of range."""
        for name in ("ring", "plane_tol", "plane_iterations", "min_plane_inliers"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{what} {name} must be > 0, got {getattr(self, name)!r}")
        if not self.see_through_tol >= 0:
            raise ConfigError(f"{what} see_through_tol must be >= 0, got {self.see_through_tol!r}")


def ring_mask(obj: np.ndarray, width: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Pixels within ``width`` of the object, outside it (and outside ``exclude``, e.g. other objects)."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    ring = cv2.dilate(obj.astype(np.uint8), k).astype(bool) & ~obj
    return ring & ~exclude if exclude is not None else ring


def plane_band(points: np.ndarray, tol: float, noise: DepthNoise | None) -> np.ndarray:
    """Per point, the distance to the plane within which a reading is the plane's: ``tol`` plus 3 sigmas of the
    sensor's noise at the point's depth (a camera reads its table as noisily as its objects)."""
    return tol + (3 * noise.sigma(points[:, 2]) if noise is not None else np.zeros(len(points)))


def _best_hypothesis(pts: np.ndarray, band: np.ndarray, iterations: int,
                     rng: np.random.Generator) -> tuple[tuple[np.ndarray, float] | None, int]:
    """RANSAC: ((n, d), inlier count) of the best plane through random point triplets (None: all degenerate)."""
    # all hypotheses at once: normals of random triplets, inlier counts from one (points x hypotheses) product
    tri = pts[rng.integers(0, len(pts), (iterations, 3))]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normals, axis=1)
    good = norm > 1e-12
    if not good.any():
        return None, 0
    normals, tri = normals[good] / norm[good, None], tri[good]
    offsets = -(normals * tri[:, 0]).sum(1)
    counts = np.zeros(len(normals), np.int64)
    for start in range(0, len(pts), 4096):  # bounded memory for large rings
        chunk = slice(start, start + 4096)
        counts += (np.abs(pts[chunk] @ normals.T + offsets) < band[chunk, None]).sum(0)
    k = int(np.argmax(counts))
    return (normals[k], float(offsets[k])), int(counts[k])


def fit_plane(points: np.ndarray, tol: float, iterations: int, rng: np.random.Generator,
              min_inliers: int, noise: DepthNoise | None = None) -> tuple[np.ndarray, float, int] | None:
    """RANSAC plane ``n . p + d = 0`` (unit n, d > 0: the camera on the positive side), refined by SVD; inliers
    lie within ``plane_band`` of it (``tol`` alone without ``noise``)."""
    pts = points[np.isfinite(points).all(1)]
    if len(pts) < max(min_inliers, 3):
        return None
    band = plane_band(pts, tol, noise)
    best, best_count = _best_hypothesis(pts, band, iterations, rng)
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
