"""A rendered sample: its random source (a pure function of (seed, index)) and the dict a frame is packed into
(uint8 RGB and alpha, float32 depth and normals, instance ids, intrinsics and pose)."""
from __future__ import annotations

import numpy as np

from .camera import View
from .raster import Frame


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The only source of randomness of a sample: reproducible from (seed, index) alone."""
    return np.random.default_rng([seed, index])


def pack_sample(frame: Frame, mask: np.ndarray, view: View, object_id: str, family: str) -> dict:
    return {
        "rgb": np.clip(frame.rgb * 255 + 0.5, 0, 255).astype(np.uint8),
        "alpha": (mask * 255).astype(np.uint8),
        "depth": frame.depth.astype(np.float32),
        "mask": mask,
        "normals": frame.normals.astype(np.float32),
        "instance": frame.instance.astype(np.int32),
        "K": view.K.astype(np.float64),
        "cam_from_world": view.cam_from_world.astype(np.float64),
        "object_id": object_id,
        "family": family,
    }
