"""The network's view of a frame: how an object gets to the network's input and its depth back to the frame.

Two views, one interface (``View``):
- ``Letterbox``: the whole frame, resized with its aspect kept and centred with padding (one view for all the
  objects of a frame: its image is computed once);
- ``recenter.VirtualCamera``: a rotated, zoomed camera looking at one object (``recenter: true``).

Each maps the frame's colour image and an object's mask to the network's input (``network_image``,
``network_mask``), names the network-input coordinates of frame pixels (``network_coords``, for the joint
bilateral upsampling) and resamples network depth back onto frame pixels (``depth_to_frame``, the bilinear route).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from bgprompt_core.frame.masks import MaskObject, SoftCrops
from bgprompt_core.frame.recenter import recenter_camera
from bgprompt_core.geometry import resize_roi, scale_intrinsics, shift_intrinsics

Box = tuple[slice, slice]


class View(Protocol):
    """What the estimator asks of a view (``Letterbox`` and ``recenter.VirtualCamera`` implement it)."""

    def network_image(self, image: np.ndarray) -> np.ndarray:
        """The frame's uint8 RGB image (H, W, 3) at the network's input: (3, S, S) float32 in [0, 1]."""

    def network_mask(self, obj: MaskObject) -> np.ndarray:
        """The object's soft mask at the network's input: (S, S) float32 in [0, 1]."""

    def network_coords(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Network-input (rows, cols) of the frame pixels of ``box``, and z_frame / z_network there (None: 1)."""

    def depth_to_frame(self, depth_s: np.ndarray, valid_s: np.ndarray, size: tuple[int, int],
                       roi: Box) -> tuple[np.ndarray, np.ndarray]:
        """Network depth -> the frame pixels of ``roi`` by bilinear resampling: (depth NaN where invalid, valid)."""


@dataclass(frozen=True)
class Letterbox:
    """Aspect-preserving resize of an (H, W) image into (out_h, out_w), centred with padding."""

    in_h: int
    in_w: int
    out_h: int
    out_w: int

    @property
    def scale(self) -> float:
        return min(self.out_h / self.in_h, self.out_w / self.in_w)

    @property
    def resized(self) -> tuple[int, int]:
        return (max(1, round(self.in_h * self.scale)), max(1, round(self.in_w * self.scale)))

    @property
    def offset(self) -> tuple[int, int]:
        """(top, left) padding."""
        rh, rw = self.resized
        return ((self.out_h - rh) // 2, (self.out_w - rw) // 2)

    def intrinsics(self, K: np.ndarray) -> np.ndarray:
        rh, rw = self.resized
        top, left = self.offset
        return shift_intrinsics(scale_intrinsics(K, rw / self.in_w, rh / self.in_h), left, top)

    def resize_into(self, img: np.ndarray, pad: float, interp: int) -> np.ndarray:
        """``img`` (H, W[, C]) resized into the padded output, the padding ``pad`` (uint8 stays uint8, else
        float32)."""
        rh, rw = self.resized
        top, left = self.offset
        shape = (self.out_h, self.out_w) + img.shape[2:]
        out = np.full(shape, pad, img.dtype if img.dtype == np.uint8 else np.float32)
        out[top:top + rh, left:left + rw] = cv2.resize(img, (rw, rh), interpolation=interp)
        return out

    def network_image(self, image: np.ndarray) -> np.ndarray:
        # resize the uint8 frame, then convert: never a full-resolution float copy; white padding
        return (self.resize_into(image, 255, cv2.INTER_AREA).astype(np.float32) / 255.0).transpose(2, 0, 1)

    def network_mask(self, obj: MaskObject) -> np.ndarray:
        """``resize_into(obj.soft, 0, INTER_LINEAR)`` in [0, 1], computed on the object's box only for binary masks
        (zero beyond it; a soft mask may have a halo: whole frame)."""
        if obj.frame_soft is not None:
            return self.resize_into(obj.frame_soft, 0, cv2.INTER_LINEAR)
        rh, rw = self.resized
        top, left = self.offset
        sy, sx = rh / self.in_h, rw / self.in_w
        margin = int(math.ceil(max(sy, sx))) + 1  # INTER_LINEAR reads 2 taps around (i + 0.5) / s - 0.5
        rows, cols = obj.box
        out_roi = (slice(max(int(rows.start * sy) - margin, 0), min(int(math.ceil(rows.stop * sy)) + margin, rh)),
                   slice(max(int(cols.start * sx) - margin, 0), min(int(math.ceil(cols.stop * sx)) + margin, rw)))
        out = np.zeros((self.out_h, self.out_w), np.float32)
        small = resize_roi(SoftCrops(obj), (rh, rw), out_roi)  # reads only the crop around the box
        out[top + out_roi[0].start:top + out_roi[0].stop, left + out_roi[1].start:left + out_roi[1].stop] = \
            small * np.float32(1 / 255)
        return out

    def network_coords(self, box: Box) -> tuple[np.ndarray, np.ndarray, None]:
        ys, xs = letterbox_coords(self, box)
        return ys, xs, None  # a letterbox leaves z unchanged

    def depth_to_frame(self, depth_s: np.ndarray, valid_s: np.ndarray, size: tuple[int, int],
                       roi: Box) -> tuple[np.ndarray, np.ndarray]:
        """Depth and validity resized together (``resize_roi``: exactly ``cv2.resize`` of the whole frame, evaluated
        on the ROI only); z is unchanged."""
        rh, rw = self.resized
        top, left = self.offset
        dv = np.stack([np.where(valid_s, depth_s, 0), valid_s], -1).astype(np.float32)[top:top + rh, left:left + rw]
        out = resize_roi(dv, size, roi)
        ok = out[..., 1] > 0.999  # depth and validity in one pass: no mixing with pixels outside the object
        return np.where(ok, out[..., 0], np.nan).astype(np.float32), ok


def letterbox_coords(lb: Letterbox, roi: Box) -> tuple[np.ndarray, np.ndarray]:
    """Network-input coordinates (rows (R, 1), columns (1, C)) of the frame pixels of ``roi`` under a letterbox:
    the pixel-centre mapping of ``cv2.resize`` from the resized image back to the frame, plus the padding offset."""
    rh, rw = lb.resized
    top, left = lb.offset
    rows, cols = roi
    ys = (np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5) * np.float32(rh / lb.in_h) - 0.5 + top
    xs = (np.arange(cols.start, cols.stop, dtype=np.float32) + 0.5) * np.float32(rw / lb.in_w) - 0.5 + left
    return ys[:, None], xs[None, :]


def network_views(objects: list[MaskObject], K: np.ndarray, frame_size: tuple[int, int], size: tuple[int, int],
                  recenter: bool, span: float) -> list[View]:
    """One view per object: a virtual camera re-centred on it (``recenter``), else the frame's one letterbox."""
    if recenter:
        return [recenter_camera(obj.binary, K, size, span) for obj in objects]
    lb = Letterbox(frame_size[0], frame_size[1], size[0], size[1])
    return [lb] * len(objects)
