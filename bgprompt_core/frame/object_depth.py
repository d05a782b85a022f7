"""One object's depth on the frame from its network output: upsampled through its view, with why pixels lack one."""
from __future__ import annotations

import cv2
import numpy as np

from bgprompt_core.frame.masks import MaskObject
from bgprompt_core.frame.upsample import joint_bilateral_upsample, pack_samples
from bgprompt_core.frame.views import View

Box = tuple[slice, slice]


def network_guide(x: np.ndarray) -> np.ndarray:
    """The network input's colour (3, S, S) in [0, 1] as the upsampling's guide: (S, S, 4) uint8 RGBA."""
    return cv2.cvtColor((x.transpose(1, 2, 0) * np.float32(255) + np.float32(0.5)).astype(np.uint8),
                        cv2.COLOR_RGB2RGBA)


def object_depth(depth_s: np.ndarray, mask_s: np.ndarray, guide_s: np.ndarray, view: View, image: np.ndarray,
                 obj: MaskObject, threshold: float, upsampling: str,
                 sigma_color: float) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """One object's depth on its frame box ``obj.box`` from its network output: (depth (R, C) float32, NaN where
    none; its pixels with a depth; {reason: pixels} for its pixels without one).

    ``threshold``: a network pixel is the object's own depth sample where its mask ``mask_s`` is >= this;
    ``upsampling``: "joint-bilateral" (``upsample.joint_bilateral_upsample``) or "bilinear" (``View.depth_to_frame``).
    """
    own = mask_s >= threshold  # the network pixels that are this object's own depth samples
    box = obj.box
    binary = obj.box_binary
    if upsampling == "bilinear":
        d, ok = view.depth_to_frame(depth_s, own, image.shape[:2], box)
        ok &= binary & (d > 0)  # NaN > 0 is False
        return d, ok, {}
    if not own.any():  # thinner than a network pixel everywhere: no sample of its own to take depth from
        return np.full(binary.shape, np.nan, np.float32), np.zeros_like(binary), {"unseen": obj.pixels}
    ys, xs, factor = view.network_coords(box)
    # NaN, inf or <= 0 from the network: NaN spreads to the pixels it reaches
    bad = own & ~(np.isfinite(depth_s) & (depth_s > 0))
    if bad.any():
        depth_s = np.where(bad, np.float32(np.nan), depth_s)
    up = joint_bilateral_upsample(pack_samples(depth_s, own, guide_s), image[box], binary, ys, xs, sigma_color)
    d = up.depth if factor is None else up.depth * factor
    missing = {}
    if up.off_view:
        missing["off_view"] = up.off_view
    lost = int(np.count_nonzero(binary)) - up.off_view - int(np.count_nonzero(up.ok))
    if lost:
        missing["invalid" if bad.any() else "unseen"] = lost
    return d, up.ok, missing
