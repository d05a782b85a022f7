"""From the network's resolution to the frame's: edge-aware depth upsampling of one object.

The network predicts depth at its input size (128 x 128 for ``mini``); a 640 x 480 frame has 5 x 5 frame pixels per
network pixel. ``joint_bilateral_upsample`` is joint bilateral upsampling (Kopf et al., SIGGRAPH 2007) restricted to
the object's own samples: the depth at a frame pixel p of the object is

    D(p) = sum_q t(p, q) r(p, q) c(q) D_s(q) / sum_q t(p, q) r(p, q) c(q)

over the 2 x 2 network samples q around p's position in the network input, with
- t the bilinear (tent) weight of q at p's position (so a smooth depth is interpolated as ``cv2.resize`` would);
- r = exp(-m^2 / (2 sigma^2)), m the mean absolute RGB difference of the frame pixel and the network input's pixel
  (the guide, quantized to steps of 2), so depth does not blend across colour edges inside the object;
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


@dataclass(frozen=True)
class Upsampled:
    """One object's depth on its box of the frame."""

    depth: np.ndarray  # (R, C) float32, NaN where there is none
    ok: np.ndarray  # (R, C) bool: the object's pixels that got a depth
    filled: int  # of those, pixels with no own network sample around them (depth from the nearest pixel with one)
    off_view: int  # object pixels outside the network's view (no depth)


def pack_samples(depth_s: np.ndarray, own_s: np.ndarray, guide_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The network's samples as two images: depth (h, w) float32, 0 where not the object's own (nothing enters from
    there, not even NaN), and the guide colour with ownership as a 4th channel, (h, w, 4) uint8 [R, G, B, 255 * own].
    ``guide_s``: the network input's colour, (h, w, 3) uint8 RGB or (h, w, 4) RGBA (one conversion per frame)."""
    depth = np.where(own_s, depth_s, np.float32(0)).astype(np.float32, copy=False)
    col = cv2.cvtColor(guide_s, cv2.COLOR_RGB2RGBA) if guide_s.shape[2] == 3 else guide_s.copy()
    own = own_s if own_s.dtype == bool else own_s > 0
    cv2.insertChannel(own.view(np.uint8) * np.uint8(255), col, 3)
    return depth, col


# colour + ownership -> one byte: round(sum |dRGB| / 6 + 1/4) (the mean absolute channel difference / 2; the 1/4
# keeps sums off rounding ties), +255 (saturating) when the sample is not the object's: the colour weight is a table
# of that byte whose last entry is exactly 0
_LUTS: dict[float, np.ndarray] = {}


def colour_index(diff: np.ndarray) -> np.ndarray:
    """(..., 4) uint8 absolute differences [dR, dG, dB, dA] -> (...) uint8 min(round((dR + dG + dB) / 6 + 1/4) + dA,
    255): the byte ``colour_weights`` looks up (dA is 0 for an own sample, 255 otherwise).

    Channel planes and saturating adds: ``cv2.transform`` with the same weights gives identical bytes at 4-5x the
    cost (its generic per-pixel matrix path; measured on a 200 x 200 object's 4 samples: 1.55 vs 0.35 ms)."""
    r, g, b, a = cv2.split(diff)
    total = cv2.add(cv2.add(r, g, dtype=cv2.CV_16U), b, dtype=cv2.CV_16U)
    return cv2.add(cv2.convertScaleAbs(total, alpha=1 / 6, beta=0.25), a)


def colour_weights(sigma_color: float) -> np.ndarray:
    """(1, 256) float32: the weight of a sample whose mean absolute colour difference to the pixel is about 2 i
    (i < 255): exp(-(2 i)^2 / (2 sigma^2)), floored at 1e-30 so it never underflows; 0 for i = 255 (not own)."""
    if sigma_color not in _LUTS:
        m = 2.0 * np.arange(256)
        lut = np.maximum(np.exp(-m ** 2 / (2 * sigma_color ** 2)), 1e-30).astype(np.float32)
        lut[255] = 0.0
        _LUTS[sigma_color] = lut.reshape(1, 256)
    return _LUTS[sigma_color]


def joint_bilateral_upsample(packed: tuple[np.ndarray, np.ndarray], guide: np.ndarray, mask: np.ndarray,
                             ys: np.ndarray, xs: np.ndarray, sigma_color: float = 100.0,
                             fill_unreached: bool = True) -> Upsampled:
    """Depth of the object pixels ``mask`` (R, C) of a frame box from the network's samples (see the module doc).

    Args:
        packed: ``pack_samples`` of the network's depth, the object's own samples and the network input's colour.
        guide: the frame's colour on the box, (R, C, 3) uint8 (same channel order as the network input).
        mask: the object's pixels on the box.
        ys, xs: network-input coordinates of each box pixel: (R, 1) and (1, C) (a letterbox) or (R, C) each
            (a virtual camera); NaN where a pixel has none.
        sigma_color: the colour kernel's standard deviation, on the mean absolute channel difference (0-255).
        fill_unreached: give object pixels without an own sample the depth of the nearest pixel with one.

    Implementation: OpenCV calls on uint8 and float32 images holding all four samples of every pixel (remap with
    integer maps gathers them, exactly; absdiff + ``colour_index`` + LUT make the colour weight): numpy's element-wise
    passes, small-axis reductions and ``exp`` cost 3-15x more on these machines.
    """
    depth_s, col = packed
    h, w = depth_s.shape
    R, C = mask.shape
    in_view = ((ys >= -0.5) & (ys <= h - 0.5)) & ((xs >= -0.5) & (xs <= w - 0.5))  # NaN compares False
    if not in_view.all():
        ys, xs = np.where(in_view, ys, 0), np.where(in_view, xs, 0)
    fy, fx = (ys - np.floor(ys)).astype(np.float32), (xs - np.floor(xs)).astype(np.float32)
    y0 = np.broadcast_to((ys - fy).astype(np.float32), (R, C))
    x0 = np.broadcast_to((xs - fx).astype(np.float32), (R, C))
    gy, gx = np.float32(1) - fy, np.float32(1) - fx
    # the four samples of every pixel as one (4R, C) image: one call per step instead of four
    tents = np.concatenate([np.broadcast_to(t, (R, C)) for t in (gy * gx, gy * fx, fy * gx, fy * fx)])
    mx = np.concatenate([x0, x0 + np.float32(1), x0, x0 + np.float32(1)])
    my = np.concatenate([y0, y0, y0 + np.float32(1), y0 + np.float32(1)])
    maps = cv2.convertMaps(mx, my, cv2.CV_16SC2, nninterpolation=True)[0]  # integer-valued: nearest is exact
    guide4 = cv2.cvtColor(np.ascontiguousarray(guide), cv2.COLOR_RGB2RGBA)  # alpha 255: "own" matches, else +255
    g = cv2.remap(col, maps, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)  # clamped at the edges
    diff = cv2.absdiff(g, np.concatenate([guide4] * 4))
    wgt = cv2.multiply(cv2.LUT(colour_index(diff), colour_weights(sigma_color)), tents)
    d = cv2.remap(depth_s, maps, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    wd = cv2.multiply(wgt, d).reshape(4, R, C)
    wgt = wgt.reshape(4, R, C)
    num = (wd[0] + wd[1]) + (wd[2] + wd[3])
    den = (wgt[0] + wgt[1]) + (wgt[2] + wgt[3])
    obj = mask & in_view
    reached = obj & (den > 0)  # NaN samples (a failing network) make NaN depth here, and in what they fill
    depth = np.full((R, C), np.nan, np.float32)
    np.divide(num, den, out=depth, where=reached)
    need = obj & ~reached
    filled = int(np.count_nonzero(need)) if fill_unreached and reached.any() else 0
    if filled:
        _, labels = cv2.distanceTransformWithLabels(np.ascontiguousarray(1 - reached.view(np.uint8)), cv2.DIST_L2,
                                                    5, labelType=cv2.DIST_LABEL_PIXEL)
        lut = np.zeros(int(labels.max()) + 1, np.float32)
        lut[labels[reached]] = depth[reached]
        depth[need] = lut[labels[need]]
    ok = obj & np.isfinite(depth)
    return Upsampled(depth, ok, filled, int(np.count_nonzero(mask)) - int(np.count_nonzero(obj)))
