"""Colour maps for depth and normals (PNG figures, debug images)."""
from __future__ import annotations

import cv2
import numpy as np


def depth_to_color(depth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Turbo colour map of depth (near = red, far = blue), black where invalid; RGB uint8."""
    valid = (depth > 0) & np.isfinite(depth) if valid is None else valid
    out = np.zeros(depth.shape + (3,), np.uint8)
    if valid.any():
        lo, hi = np.percentile(depth[valid], [1, 99])
        t = np.clip((depth - lo) / max(hi - lo, 1e-9), 0, 1)
        col = cv2.applyColorMap(((1 - t) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
        out[valid] = cv2.cvtColor(col, cv2.COLOR_BGR2RGB)[valid]
    return out


def normals_to_color(normals: np.ndarray) -> np.ndarray:
    """Camera-frame normals as RGB ((n + 1) / 2), black where zero."""
    valid = np.abs(normals).sum(-1) > 0
    return np.where(valid[..., None], ((normals + 1) * 127.5).clip(0, 255), 0).astype(np.uint8)
