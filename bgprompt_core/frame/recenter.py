"""Object re-centering by a virtual camera: rotate the view onto the object and zoom so it fills the frame.

The paper names non-centred objects as a limitation and suggests "simulating a camera rotation and
zoom". A pure rotation R about the camera centre plus new intrinsics K' is the homography
``H = K' R K^-1``; 3D points are unchanged (X' = R X), so z-depth changes by the per-pixel factor
``z' = z / (R^T K'^-1 p')_z`` (with K'^-1 p' normalized to z = 1), and normals rotate with R.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def rotation_to_axis(ray: np.ndarray) -> np.ndarray:
    """The smallest rotation R with R @ ray/|ray| = (0, 0, 1) (Rodrigues)."""
    a = ray / np.linalg.norm(ray)
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(a, z)
    s, c = np.linalg.norm(v), float(a @ z)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * ((1 - c) / s**2)


@dataclass(frozen=True)
class VirtualCamera:
    """A rotated, zoomed view of the same camera centre."""

    R: np.ndarray  # X_new = R @ X_old
    K_old: np.ndarray
    K_new: np.ndarray
    old_size: tuple[int, int]  # (H, W)
    new_size: tuple[int, int]

    @property
    def H(self) -> np.ndarray:
        """Homography from old to new pixel coordinates."""
        return self.K_new @ self.R @ np.linalg.inv(self.K_old)

    def _pixels(self, size: tuple[int, int]) -> np.ndarray:
        v, u = np.mgrid[0:size[0], 0:size[1]].astype(np.float64)
        return np.stack([u, v, np.ones_like(u)], -1)

    def depth_factor_new(self) -> np.ndarray:
        """z_new / z_old for every new pixel: 1 / (R^T K_new^-1 p')_z."""
        r = self._pixels(self.new_size) @ np.linalg.inv(self.K_new).T
        return 1.0 / (r @ self.R)[..., 2]

    def depth_factor_old(self) -> np.ndarray:
        """z_old / z_new for every old pixel: 1 / (R K_old^-1 p)_z."""
        r = self._pixels(self.old_size) @ np.linalg.inv(self.K_old).T
        return 1.0 / (r @ self.R.T)[..., 2]

    def view_coords(self, roi: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the old pixels of ``roi``: their (rows, cols) in the new view, (R, C) float32 each, NaN where a
        pixel lies behind the virtual camera, and z_old / z_new there (``depth_factor_old`` on the box only)."""
        rows, cols = roi
        v, u = np.mgrid[rows, cols].astype(np.float64)
        p = np.stack([u, v, np.ones_like(u)], -1)
        q = p @ self.H.T
        with np.errstate(divide="ignore", invalid="ignore"):
            front = q[..., 2] > 1e-12
            xs = np.where(front, q[..., 0] / q[..., 2], np.nan).astype(np.float32)
            ys = np.where(front, q[..., 1] / q[..., 2], np.nan).astype(np.float32)
            factor = (1.0 / (p @ np.linalg.inv(self.K_old).T @ self.R.T)[..., 2]).astype(np.float32)
        return ys, xs, factor

    def warp_image(self, img: np.ndarray, interp: int = cv2.INTER_LINEAR, border=0) -> np.ndarray:
        h, w = self.new_size
        return cv2.warpPerspective(img, self.H, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=border)

    def unwarp_image(self, img: np.ndarray, interp: int = cv2.INTER_LINEAR, border=0) -> np.ndarray:
        h, w = self.old_size
        return cv2.warpPerspective(img, np.linalg.inv(self.H), (w, h), flags=interp,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=border)

    def warp_depth(self, depth: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Depth and validity in the new view; pixels that mix valid and invalid samples are dropped."""
        return self._warp_depth(depth, valid, self.warp_image, self.depth_factor_new())

    def unwarp_depth(self, depth: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Back to the original view (inverse of ``warp_depth``)."""
        return self._warp_depth(depth, valid, self.unwarp_image, self.depth_factor_old())

    @staticmethod
    def _warp_depth(depth, valid, warp, factor):
        v = valid.astype(np.float32)
        wv = warp(v, cv2.INTER_LINEAR)
        wd = warp(np.where(valid, depth, 0).astype(np.float32), cv2.INTER_LINEAR)
        ok = wv > 0.999
        return np.where(ok, wd * factor, 0).astype(np.float32), ok

    def warp_normals(self, normals: np.ndarray) -> np.ndarray:
        return self.warp_image(normals.astype(np.float32), cv2.INTER_NEAREST) @ self.R.T.astype(np.float32)

    # --- the network's view of one object (frame/views.py's View) -----------------------------------------
    def network_image(self, image: np.ndarray) -> np.ndarray:
        """The frame's uint8 RGB image in the new view, (3, S, S) float32 in [0, 1], white beyond the frame."""
        return self.warp_image(image, border=(255, 255, 255)).transpose(2, 0, 1).astype(np.float32) / 255.0

    def network_mask(self, obj) -> np.ndarray:
        """The object's (``masks.MaskObject``) soft mask in the new view, (S, S) float32."""
        return self.warp_image(obj.soft_float())

    def network_coords(self, box: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.view_coords(box)

    def depth_to_frame(self, depth_s: np.ndarray, valid_s: np.ndarray, size: tuple[int, int],
                       roi: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """New-view depth back on the old pixels of ``roi`` (``unwarp_depth``: z rescaled per pixel), NaN where
        invalid; ``size`` is the old view's (H, W), which the camera knows already."""
        d, ok = self.unwarp_depth(depth_s, valid_s)
        return np.where(ok, d, np.nan).astype(np.float32)[roi], ok[roi]


def recenter_camera(mask: np.ndarray, K: np.ndarray, out_size: tuple[int, int] | None = None,
                    span: float = 0.8) -> VirtualCamera:
    """Virtual camera looking at the mask's centroid, zoomed so the mask spans ``span`` of the half-size (the
    node's ``recenter_fill``)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("cannot re-centre on an empty mask")
    if not 0 < span <= 1.5:
        raise ValueError(f"span (recenter_fill) must lie in (0, 1.5], got {span}")
    K = np.asarray(K, np.float64)
    out_size = out_size or mask.shape[:2]
    Kinv = np.linalg.inv(K)
    R = rotation_to_axis(Kinv @ np.array([xs.mean(), ys.mean(), 1.0]))
    # extent of the mask's pixel corners in the rotated, normalized image plane
    corners = np.concatenate([np.stack([xs + dx, ys + dy, np.ones_like(xs, float)], -1)
                              for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)])
    q = corners @ Kinv.T @ R.T
    q = q[:, :2] / q[:, 2:]
    h, w = out_size
    f = span * min(h, w) / 2 / max(np.abs(q).max(), 1e-9)
    K_new = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])
    return VirtualCamera(R, K, K_new, tuple(mask.shape[:2]), tuple(out_size))
