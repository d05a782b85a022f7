"""Object masks: one ``MaskObject`` per object of a frame's mask (binary, soft or instance labels).

An object is held on its bounding box (``box_binary``, ``box_soft``): a frame of five 100 x 70 objects holds five
small masks, not five frame-sized ones (issue 29: fresh frame-sized arrays per object cost the estimator more than
the work on them). ``binary`` and ``soft`` give the frame-sized masks for the callers that want them (the
re-centring camera, evaluation), built on request.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from bgprompt_core.errors import InputError


@dataclass
class MaskObject:
    """One object of a frame's mask: its bounding box and, on that box, its binary mask and soft mask (for
    compositing); a soft mask from a float frame keeps that frame (``frame_soft``: its halo may reach past the box)."""

    id: int
    box: tuple[slice, slice]  # rows, cols of the binary mask's bounding box
    box_binary: np.ndarray  # (R, C) bool on the box
    box_soft: np.ndarray  # (R, C) on the box: uint8 0 / 255 for binary masks (no float copy), else float32 in [0, 1]
    frame_shape: tuple[int, int]  # (H, W) of the frame
    frame_soft: np.ndarray | None = None  # (H, W) float32: a soft mask's whole frame; None for binary masks

    @property
    def pixels(self) -> int:
        return int(np.count_nonzero(self.box_binary))

    @cached_property
    def binary(self) -> np.ndarray:
        """(H, W) bool: the object's pixels on the whole frame."""
        out = np.zeros(self.frame_shape, bool)
        out[self.box] = self.box_binary
        return out

    @cached_property
    def soft(self) -> np.ndarray:
        """(H, W): the soft mask on the whole frame (``frame_soft``, or the binary mask as uint8 0 / 255)."""
        if self.frame_soft is not None:
            return self.frame_soft
        out = np.zeros(self.frame_shape, np.uint8)
        out[self.box] = self.box_soft
        return out

    def soft_crop(self, rows: slice, cols: slice) -> np.ndarray:
        """The soft mask (dtype of ``soft``) on any frame region, zero beyond the box, without a frame-sized copy."""
        if self.frame_soft is not None:
            return self.frame_soft[rows, cols]
        out = np.zeros((rows.stop - rows.start, cols.stop - cols.start), self.box_soft.dtype)
        (b0, b1), (d0, d1) = (self.box[0].start, self.box[0].stop), (self.box[1].start, self.box[1].stop)
        r0, r1 = max(rows.start, b0), min(rows.stop, b1)  # the region's overlap with the box
        c0, c1 = max(cols.start, d0), min(cols.stop, d1)
        if r0 < r1 and c0 < c1:
            out[r0 - rows.start:r1 - rows.start, c0 - cols.start:c1 - cols.start] = \
                self.box_soft[r0 - b0:r1 - b0, c0 - d0:c1 - d0]
        return out

    def soft_float(self, roi: tuple[slice, slice] | None = None) -> np.ndarray:
        s = self.soft if roi is None else self.soft_crop(*roi)
        return s.astype(np.float32) / 255.0 if s.dtype == np.uint8 else s


class SoftCrops:
    """An object's soft mask seen as a frame-sized array that only crops (``.shape``, ``[rows, cols]``): what
    ``geometry.resize_roi`` reads, without the frame-sized copy."""

    def __init__(self, obj: MaskObject):
        self.obj = obj
        self.shape = obj.frame_shape

    def __getitem__(self, roi: tuple[slice, slice]) -> np.ndarray:
        rows, cols = roi
        return self.obj.soft_crop(slice(*rows.indices(self.shape[0])[:2]), slice(*cols.indices(self.shape[1])[:2]))


def bounding_box(binary: np.ndarray) -> tuple[slice, slice] | None:
    """(rows, cols) slices of the True pixels' bounding box; None when there are none."""
    rows = np.flatnonzero(binary.any(1))
    if not len(rows):
        return None
    cols = np.flatnonzero(binary[rows[0]:rows[-1] + 1].any(0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def split_mask(mask: np.ndarray, threshold: float, min_pixels: int, max_objects: int | None = None,
               dropped: list[int] | None = None) -> list[MaskObject]:
    """One ``MaskObject`` per object with at least ``min_pixels`` pixels.

    bool / uint8 (0/1 or 0/255): one object; float in [0, 1]: one soft object; uint16 / int32 / int64:
    instance labels (every non-zero value is an object). With ``max_objects`` only the largest that many
    (ties: smaller id first) are returned, largest first, and masks are built for those alone, so memory
    and time do not grow with the label count; the ids left out are appended to ``dropped``. Each object's masks
    are built on its bounding box only.
    """
    shape = mask.shape[:2]
    if mask.dtype == bool or mask.dtype == np.uint8:
        binary = mask.astype(bool, copy=False) if mask.dtype == bool else mask > 0
        box = bounding_box(binary)
        candidates = [] if box is None else [(1, box, binary[box], None)]
    elif np.issubdtype(mask.dtype, np.floating):
        if not np.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise InputError("a float mask must be a soft mask with values in [0, 1] (NaN/inf or out of range found)")
        soft = mask.astype(np.float32, copy=False)
        binary = soft >= threshold
        box = bounding_box(binary)
        candidates = [] if box is None else [(1, box, binary[box], soft)]
    elif np.issubdtype(mask.dtype, np.integer):
        if np.issubdtype(mask.dtype, np.signedinteger) and mask.min() < 0:
            raise InputError("instance labels must be >= 0 (0 = background)")
        fg = mask[mask != 0]  # objects are usually a small part of the frame: count only their pixels
        if fg.size and fg.max() <= 65535:  # bincount is much faster than np.unique
            counts = np.bincount(fg)
            values = np.nonzero(counts >= min_pixels)[0]
            sizes = counts[values]
        else:
            values, sizes = np.unique(fg, return_counts=True)
            values, sizes = values[sizes >= min_pixels], sizes[sizes >= min_pixels]
        ids = [int(i) for i in values]
        if max_objects is not None:
            order = np.lexsort((values, -sizes))  # largest first, then by id
            ids = [int(values[k]) for k in order[:max_objects]]
            if dropped is not None:
                dropped.extend(int(values[k]) for k in order[max_objects:])
        candidates = []
        scratch = np.empty(shape, bool)  # one frame-sized buffer for all objects: fresh ones cost page faults
        for i in ids:
            np.equal(mask, i, out=scratch)
            box = bounding_box(scratch)
            candidates.append((i, box, scratch[box].copy(), None))
    else:
        raise InputError(f"unsupported mask dtype {mask.dtype}")
    kept = []
    for oid, box, box_binary, frame_soft in candidates:
        if np.count_nonzero(box_binary) >= min_pixels:
            box_soft = box_binary.view(np.uint8) * np.uint8(255) if frame_soft is None else frame_soft[box]
            kept.append(MaskObject(oid, box, box_binary, box_soft, shape, frame_soft))
    if not kept:
        raise InputError(f"empty mask: no object with at least {min_pixels} pixels")
    return kept
