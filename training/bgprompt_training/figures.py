"""Figures like the paper's: Figure 5 (input, composite, depth, normals, side view) and Figure 6 (prompt and
the normal map the network predicts for the prompt alone)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from bgprompt_core.geometry import backproject, normals_from_depth

from bgprompt_core.evaluation.colormaps import depth_to_color, normals_to_color


def to_rgb8(img01: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (img01.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def normal_map(depth: torch.Tensor, K: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    n, ok = normals_from_depth(depth[None].float(), K.float(), None if mask is None else mask[None])
    return normals_to_color(np.where(ok[0, ..., None].numpy(), n[0].numpy(), 0))


def side_view(depth: torch.Tensor, K: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, size: int) -> np.ndarray:
    """The back-projected object seen from the side (rotated 90 degrees about the vertical axis), splatted
    orthographically with its image colours; depth scaled to the object's extent."""
    m = mask > 0.5
    out = np.full((size, size, 3), 255, np.uint8)
    if m.sum() < 2:
        return out
    pts = backproject(depth[None].float(), K.float())[0][m].numpy()
    col = to_rgb8(image)[m.numpy()]
    centre = np.median(pts, 0)
    p = pts - centre
    side = np.stack([-p[:, 2], p[:, 1], p[:, 0]], 1)  # look along +x: horizontal = -z (depth), vertical = y
    extent = np.abs(side[:, :2]).max() + 1e-9
    uv = ((side[:, :2] / extent) * 0.45 + 0.5) * (size - 1)
    order = np.argsort(-side[:, 2])  # far first, near painted last
    u, v = np.clip(np.rint(uv[order, 0]).astype(int), 0, size - 1), np.clip(np.rint(uv[order, 1]).astype(int), 0, size - 1)
    out[v, u] = col[order]
    return out


def label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(img, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def figure5_row(name: str, image: torch.Tensor, composite01: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                mask: torch.Tensor) -> np.ndarray:
    """One condition: input | composite | depth | normals | side view."""
    d = torch.where(mask > 0.5, depth, torch.zeros_like(depth))
    size = image.shape[-1]
    tiles = [to_rgb8(image), to_rgb8(composite01), depth_to_color(d.numpy(), (mask > 0.5).numpy()),
             normal_map(d, K, mask), side_view(depth, K, mask, image, size)]
    tiles[0] = label(tiles[0], name[:28])
    return np.concatenate(tiles, 1)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
