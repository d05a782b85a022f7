"""From the network's resolution to the frame's: edge-aware depth upsampling of one object.

The network predicts depth at its input size (128 x 128 for ``mini``); a 640 x 480 frame has 5 x 5 frame pixels per
network pixel. ``joint_bilateral_upsample`` is joint bilateral upsampling (Kopf et al., SIGGRAPH 2007) restricted to
the object's own samples: the depth at a frame pixel p of the object is

    D(p) = sum_q t(p, q) r(p, q) c(q) D_s(q) / sum_q t(p, q) r(p, q) c(q)

over the 2 x 2 network samples q around p's position in the network input, with
- t the bilinear (tent) weight of q at p's position (so a smooth depth is interpolated as ``cv2.resize`` would);
- r = exp(-|I(p) - I_s(q)|^2 / (2 sigma^2)) + r_floor, the colour similarity of the frame pixel and the network
  input's pixel (the guide), so depth does not blend across colour edges inside the object;
- c the sample's confidence: 1 where the object's own mask covers the network pixel (soft mask >= threshold), 0
  elsewhere: depth of the background, the prompt or another instance never enters, D(p) is a convex combination of
  the object's own depth samples.
Object pixels with no own sample among their four (the rim, parts thinner than a network pixel: spokes, handles,
legs) take the depth of the nearest object pixel that has one (a distance transform), so every object pixel that
lies in the network's view gets a depth. Pixels outside the network's view (a virtual camera zoomed past the
object) get none, and are counted so the frame can say why.

Why not a kept library (measured on a 100 x 70 box, one thread): opencv-contrib's ``ximgproc.jointBilateralFilter``
and ``guidedFilter`` filter at ONE resolution, so they need the depth first upsampled to the frame and a window of
two network pixels (diameter 11 at 5x): 2-10 ms per object against ~0.3 ms here, and contrib would replace the
pinned opencv-python-headless wheel (two cv2 wheels conflict in one environment). kornia's joint bilateral blur
needs torch, which the robot's default (onnxruntime / TensorRT) path does not import.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

METHODS = ("joint-bilateral", "bilinear")  # bilinear: the upsampling before issue 29, for comparison


@dataclass(frozen=True)
class Upsampled:
    """One object's depth on its box of the frame."""

    depth: np.ndarray  # (R, C) float32, NaN where there is none
    ok: np.ndarray  # (R, C) bool: the object's pixels that got a depth
    filled: int  # of those, pixels with no own network sample around them (depth from the nearest pixel with one)
    off_view: int  # object pixels outside the network's view (no depth)


def letterbox_coords(lb, roi: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    """Network-input coordinates (rows (R, 1), columns (1, C)) of the frame pixels of ``roi`` under a letterbox:
    the pixel-centre mapping of ``cv2.resize`` from the resized image back to the frame, plus the padding offset."""
    rh, rw = lb.resized
    top, left = lb.offset
    rows, cols = roi
    ys = (np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5) * np.float32(rh / lb.in_h) - 0.5 + top
    xs = (np.arange(cols.start, cols.stop, dtype=np.float32) + 0.5) * np.float32(rw / lb.in_w) - 0.5 + left
    return ys[:, None], xs[None, :]


def pack_samples(depth_s: np.ndarray, conf_s: np.ndarray, guide_s: np.ndarray) -> np.ndarray:
    """(h, w, 5) float32 [c * D, c, R, G, B] (guide in [0, 255]): one gather fetches all a sample holds."""
    h, w = depth_s.shape
    packed = np.empty((h, w, 5), np.float32)
    c = conf_s.astype(np.float32, copy=False)
    np.multiply(np.where(c > 0, depth_s, 0), c, out=packed[..., 0])  # off the object nothing enters, not even NaN
    packed[..., 1] = c
    packed[..., 2:] = guide_s
    return packed


def joint_bilateral_upsample(packed: np.ndarray, guide: np.ndarray, mask: np.ndarray, ys: np.ndarray,
                             xs: np.ndarray, sigma_color: float = 25.0, color_floor: float = 1e-4,
                             fill: bool = True) -> Upsampled:
    """Depth of the object pixels ``mask`` (R, C) of a frame box from the network's samples (see the module doc).

    Args:
        packed: ``pack_samples`` of the network's depth, the object's sample confidence and the network input's
            colour (h, w, 5).
        guide: the frame's colour on the box, (R, C, 3) uint8 (same channel order as the network input).
        mask: the object's pixels on the box.
        ys, xs: network-input coordinates of each box pixel: (R, 1) and (1, C) (a letterbox) or (R, C) each
            (a virtual camera); NaN where a pixel has none.
        sigma_color: the colour kernel's standard deviation, in 0-255 units.
        color_floor: added to the colour weight, so a pixel unlike all four samples still takes their tent mean.
        fill: give object pixels without an own sample the depth of the nearest pixel with one.
    """
    h, w = packed.shape[:2]
    R, C = mask.shape
    in_view = (ys >= -0.5) & (ys <= h - 0.5) & (xs >= -0.5) & (xs <= w - 0.5)  # NaN compares False
    y = np.where(in_view, ys, 0).astype(np.float32) if not in_view.all() else ys
    x = np.where(in_view, xs, 0).astype(np.float32) if not in_view.all() else xs
    y0, x0 = np.floor(y), np.floor(x)
    fy, fx = y - y0, x - x0
    i0, j0 = y0.astype(np.intp), x0.astype(np.intp)
    rows = np.clip(np.stack([i0, i0 + 1]), 0, h - 1)  # (2, ...) as cv2.resize: edge samples replicated
    cols = np.clip(np.stack([j0, j0 + 1]), 0, w - 1)
    ty = np.stack([1 - fy, fy])
    tx = np.stack([1 - fx, fx])
    g = packed[rows[:, None], cols[None, :]]  # (2, 2, R, C, 5): the four samples of every pixel, one gather
    t = ty[:, None] * tx[None, :]  # (2, 2, R, C) tent weights
    diff = g[..., 2:] - guide.astype(np.float32)
    d2 = np.einsum("abrck,abrck->abrc", diff, diff)
    r = np.exp(d2 * np.float32(-0.5 / sigma_color ** 2))
    r += np.float32(color_floor)
    wgt = (t * r).reshape(4, R, C)
    g = g.reshape(4, R, C, 5)
    num = np.einsum("nrc,nrc->rc", wgt, g[..., 0])
    den = np.einsum("nrc,nrc->rc", wgt, g[..., 1])
    obj = mask & np.broadcast_to(in_view, mask.shape)
    reached = obj & (den > 1e-12)  # NaN samples (a failing network) make NaN depth here, and in what they fill
    depth = np.full((R, C), np.nan, np.float32)
    np.divide(num, den, out=depth, where=reached)
    need = obj & ~reached
    filled = int(np.count_nonzero(need)) if fill and reached.any() else 0
    if filled:
        _, labels = cv2.distanceTransformWithLabels(np.ascontiguousarray(1 - reached.view(np.uint8)), cv2.DIST_L2,
                                                    5, labelType=cv2.DIST_LABEL_PIXEL)
        lut = np.zeros(int(labels.max()) + 1, np.float32)
        lut[labels[reached]] = depth[reached]
        depth[need] = lut[labels[need]]
    ok = obj & np.isfinite(depth)
    return Upsampled(depth, ok, filled, int(np.count_nonzero(mask)) - int(np.count_nonzero(obj)))
