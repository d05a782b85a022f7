"""Contact sheets of rendered samples: RGB | depth | normals | mask, one row per sample."""
from __future__ import annotations

from pathlib import Path

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


def contact_sheet(samples: list[dict], path: str | Path) -> Path:
    rows = []
    for s in samples:
        mask = np.repeat(s["mask"][..., None].astype(np.uint8) * 255, 3, -1)
        rows.append(np.concatenate([s["rgb"], depth_to_color(s["depth"]), normals_to_color(s["normals"]), mask], 1))
    sheet = np.concatenate(rows, 0)
    path = Path(path)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path
