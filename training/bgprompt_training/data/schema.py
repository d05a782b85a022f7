"""The one sample schema every loader returns, and its conversion to tensors.

numpy sample (what loaders and transforms exchange):
    rgb (H, W, 3) uint8; depth (H, W) float32 metres (0 = invalid); mask (H, W) bool object mask; K (3, 3);
    id str; optionally alpha (H, W) uint8.
torch sample (``to_torch``): image (3, H, W) float32 in [0, 1]; depth (H, W); mask (1, H, W) float32
(object AND valid depth); K (3, 3) float32; id.

Ground-truth normals are not part of it: Eq. 4's target normals come from the depth (``object_depth_loss``), so
none of training or evaluation reads a data set's own normals (a render's stay in its shards, for previews).
"""
from __future__ import annotations

import numpy as np
import torch

from bgprompt_core.errors import BgpromptError

REQUIRED = ("rgb", "depth", "mask", "K")


class BadSample(BgpromptError, ValueError):
    """A sample that cannot be used; the message names the file and the problem."""


def validate(sample: dict, origin: str) -> dict:
    """Check shapes, dtypes and values; raise BadSample naming ``origin``."""
    missing = [k for k in REQUIRED if k not in sample]
    if missing:
        raise BadSample(f"{origin}: missing {missing}")
    h, w = sample["depth"].shape[:2]
    if sample["rgb"].shape != (h, w, 3):
        raise BadSample(f"{origin}: rgb {sample['rgb'].shape} does not match depth {(h, w)}")
    if sample["mask"].shape != (h, w):
        raise BadSample(f"{origin}: mask {sample['mask'].shape} does not match depth {(h, w)}")
    depth = sample["depth"]
    valid = sample["mask"] & (depth > 0) & np.isfinite(depth)
    if not valid.any():
        raise BadSample(f"{origin}: empty object mask (no object pixel with valid depth)")
    if np.isnan(depth[sample["mask"]]).mean() > 0.5:
        raise BadSample(f"{origin}: depth is NaN on most of the object")
    K = np.asarray(sample["K"], float)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise BadSample(f"{origin}: invalid intrinsics {K.tolist()}")
    return sample


def to_torch(sample: dict) -> dict:
    depth = np.nan_to_num(sample["depth"].astype(np.float32), nan=0.0, posinf=0.0)
    mask = sample["mask"] & (depth > 0)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(sample["rgb"].transpose(2, 0, 1))).float() / 255.0,
        "depth": torch.from_numpy(depth),
        "mask": torch.from_numpy(mask.astype(np.float32))[None],
        "K": torch.from_numpy(np.asarray(sample["K"], np.float32)),
        "id": str(sample.get("id", "")),
    }
