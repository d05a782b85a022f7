"""Camera geometry: intrinsics under resize/crop/pad, back-projection (of whole images or boxes), oriented boxes,
normals from depth.

Pixel convention: pixel (u, v) has its centre at integer coordinates (OpenCV / ROS CameraInfo), so a
resize by factor s maps u -> s * (u + 0.5) - 0.5. Camera optical frame: x right, y down, z forward.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # torch is imported by the torch functions only: a deployed node never loads it
    import torch


def check_intrinsics(K: np.ndarray | torch.Tensor) -> None:
    """Raise ValueError unless K is a finite 3x3 pinhole matrix with positive focal lengths."""
    k = np.asarray(K.detach().cpu() if hasattr(K, "detach") else K, dtype=np.float64)
    if k.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must be 3x3, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError(f"intrinsics contain NaN or inf: {k.reshape(-1, 9).tolist()}")
    if (k[..., 0, 0] <= 0).any() or (k[..., 1, 1] <= 0).any():
        raise ValueError(f"focal lengths must be positive, got fx={k[..., 0, 0]}, fy={k[..., 1, 1]}")


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K after resizing the image by (sx, sy) (pixel-centre convention)."""
    out = np.array(K, dtype=np.float64, copy=True)
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 1] *= sx
    out[0, 2] = sx * (K[0, 2] + 0.5) - 0.5
    out[1, 2] = sy * (K[1, 2] + 0.5) - 0.5
    return out


def shift_intrinsics(K: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """K after moving the image origin: padding left/top by (dx, dy) > 0, cropping by (-dx, -dy)."""
    out = np.array(K, dtype=np.float64, copy=True)
    out[0, 2] += dx
    out[1, 2] += dy
    return out


def _resize_span(start: int, stop: int, n_out: int, n_in: int) -> tuple[int, int, int, int]:
    """Output span [a, b) covering [start, stop) and the input span [c, d) that resizes exactly onto it."""
    g = math.gcd(n_out, n_in)
    p, q = n_out // g, n_in // g  # p output pixels correspond to exactly q input pixels
    a = max(0, (start // p - 1) * p)  # one extra period each side: the crop's edge clamping stays outside
    b = min(n_out, (-(-stop // p) + 1) * p)
    return a, b, a // p * q, b // p * q


def resize_roi(src: np.ndarray, out_hw: tuple[int, int], roi: tuple[slice, slice]) -> np.ndarray:
    """``cv2.resize(src, (W, H), INTER_LINEAR)[roi]`` computed on a crop of ``src`` only.

    Why not ``warpAffine``: it quantizes sample positions to 1/32 pixel. Resizing a crop is exact when
    the crop starts on a whole period of the scale ratio (W / gcd(W, w) output pixels per input period),
    so the crop is widened to whole periods plus one period of margin (where ``cv2.resize`` clamps
    at the crop's edge instead of interpolating across it) and then cut to ``roi``.
    """
    H, W = out_hw
    rows, cols = roi
    r0, r1, sr0, sr1 = _resize_span(rows.start, rows.stop, H, src.shape[0])
    c0, c1, sc0, sc1 = _resize_span(cols.start, cols.stop, W, src.shape[1])
    out = cv2.resize(src[sr0:sr1, sc0:sc1], (c1 - c0, r1 - r0), interpolation=cv2.INTER_LINEAR)
    return out[rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0]


_RAYS: OrderedDict = OrderedDict()  # least recently used first
RAYS_CACHE_BYTES = 128 * 2**20  # about one 4096x3200 frame's rays; a 1920x1080 camera takes 24 MiB


def rays_cache_bytes() -> int:
    """Bytes the camera_rays cache holds now."""
    return sum(r.nbytes for r in _RAYS.values())


def _rays(K: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(len(rows), len(cols), 3) float32 z = 1 rays of the pixels at these (float64) row and column coordinates."""
    u = (cols - K[0, 2]) / K[0, 0]
    v = (rows - K[1, 2]) / K[1, 1]
    rays = np.empty((len(rows), len(cols), 3), np.float32)
    rays[..., 1] = v[:, None]
    rays[..., 0] = u[None, :] - (K[0, 1] / K[0, 0]) * v[:, None]
    rays[..., 2] = 1.0
    return rays


def camera_rays(K: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float32 rays with z = 1 for K (x = (u - cx - skew * y) / fx, y = (v - cy) / fy).

    Cached (read-only): cameras rarely change between frames. The cache is capped by bytes
    (``RAYS_CACHE_BYTES``, least recently used out first), not by entries: a K that drifts every frame at 4096x4096
    would otherwise keep 200 MiB per entry. The latest rays stay cached even when they alone exceed the cap.
    """
    key = (K.tobytes(), h, w)
    if key in _RAYS:
        _RAYS.move_to_end(key)
    else:
        rays = _rays(K, np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64))
        rays.flags.writeable = False
        _RAYS[key] = rays
        while len(_RAYS) > 1 and rays_cache_bytes() > RAYS_CACHE_BYTES:
            _RAYS.popitem(last=False)
    return _RAYS[key]


def backproject_np(depth: np.ndarray, K: np.ndarray, origin: tuple[int, int] | None = None) -> np.ndarray:
    """Organized points (h, w, 3) float32 in the camera optical frame; NaN where depth is NaN.

    ``depth`` is the image K describes or, with ``origin`` (row, col), a crop of it whose first pixel is that
    pixel of the image (an object's box): its rays are those of the whole image's pixels there, computed for the
    crop only and not cached (``camera_rays`` caches whole images' rays).
    """
    h, w = depth.shape
    K = np.asarray(K, np.float64)
    if origin is None:
        rays = camera_rays(K, h, w)
    else:
        top, left = origin
        rays = _rays(K, np.arange(top, top + h, dtype=np.float64), np.arange(left, left + w, dtype=np.float64))
    return np.multiply(rays, depth[..., None], dtype=np.float32)


def finite_points(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` (any shape ending in 3) with three finite coordinates, as (N, 3) float64."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    return p[np.isfinite(p).all(1)]


def oriented_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, axes as rows, extents) of the PCA-aligned box around the points; extents sorted descending."""
    p = finite_points(points)
    if len(p) < 3:
        raise ValueError("an oriented box needs at least 3 points")
    mean = p.mean(0)
    axes = np.linalg.svd(p - mean, full_matrices=False)[2]
    local = (p - mean) @ axes.T
    lo, hi = local.min(0), local.max(0)
    order = np.argsort(-(hi - lo))
    axes, lo, hi = axes[order], lo[order], hi[order]
    return mean + ((lo + hi) / 2) @ axes, axes, hi - lo


def pixel_grid(h: int, w: int, dtype=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    v, u = torch.meshgrid(torch.arange(h, dtype=dtype, device=device),
                          torch.arange(w, dtype=dtype, device=device), indexing="ij")
    return u, v


def backproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (N, H, W, 3) from z-depth (N, H, W) and K (3, 3) or (N, 3, 3)."""
    import torch

    n, h, w = depth.shape
    K = K.to(depth).expand(n, 3, 3) if K.dim() == 2 else K.to(depth)
    u, v = pixel_grid(h, w, depth.dtype, depth.device)
    fx, fy = K[:, 0, 0].view(n, 1, 1), K[:, 1, 1].view(n, 1, 1)
    cx, cy = K[:, 0, 2].view(n, 1, 1), K[:, 1, 2].view(n, 1, 1)
    skew = K[:, 0, 1].view(n, 1, 1)
    y = (v - cy) / fy * depth
    x = ((u - cx) * depth - skew * y) / fx
    return torch.stack([x, y, depth], dim=-1)


def normals_from_depth(depth: torch.Tensor, K: torch.Tensor, valid: torch.Tensor | None = None,
                       eps: float = 1e-30) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit normals (N, H, W, 3) facing the camera, and where they are defined (N, H, W) bool.

    As in the reference code, the normal at a pixel is the cross product of the differences to its
    top and left neighbours of the back-projected points; it needs the pixel and both neighbours
    valid, so the first row and column are never defined. Hand-written (kornia's version uses
    different neighbours) so that training losses match the paper's Eq. 4 exactly.
    """
    import torch

    p = backproject(depth, K)
    d_left = torch.zeros_like(p)
    d_top = torch.zeros_like(p)
    d_left[:, :, 1:] = p[:, :, 1:] - p[:, :, :-1]
    d_top[:, 1:, :] = p[:, 1:, :] - p[:, :-1, :]
    n = torch.cross(d_top, d_left, dim=-1)
    sq = (n * n).sum(-1, keepdim=True)
    n = n / torch.sqrt(sq.clamp_min(eps))
    ok = torch.ones_like(depth, dtype=torch.bool) if valid is None else valid > 0.5
    ok = ok & torch.isfinite(depth) & (depth > 0)
    defined = torch.zeros_like(ok)
    defined[:, 1:, 1:] = ok[:, 1:, 1:] & ok[:, :-1, 1:] & ok[:, 1:, :-1]
    defined &= sq[..., 0] > eps
    return n, defined


def __getattr__(name: str):
    """``Letterbox`` moved to ``bgprompt_core.frame.views`` (the network's views of a frame): handed out from there,
    with a DeprecationWarning (imported on demand: frame.views itself builds on this module)."""
    if name == "Letterbox":
        import importlib
        import warnings

        warnings.warn("bgprompt_core.geometry.Letterbox moved to bgprompt_core.frame.views.Letterbox; import it from "
                      "there", DeprecationWarning, stacklevel=2)
        return importlib.import_module("bgprompt_core.frame.views").Letterbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
