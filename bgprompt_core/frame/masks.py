"""Object masks: one ``MaskObject`` per object of a frame's mask (binary, soft or instance labels)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bgprompt_core.errors import InputError



@dataclass(frozen=True)
class MaskObject:
    """One object of a frame's mask: its soft mask for compositing, binary mask and bounding box."""

    id: int
    soft: np.ndarray  # float32 in [0, 1], or uint8 0..255 for binary masks (no full-resolution float copy)
    binary: np.ndarray  # (H, W) bool
    box: tuple[slice, slice]  # rows, cols of the binary mask's bounding box

    @property
    def pixels(self) -> int:
        return int(np.count_nonzero(self.binary[self.box]))

    def soft_float(self, roi: tuple[slice, slice] | None = None) -> np.ndarray:
        s = self.soft if roi is None else self.soft[roi]
        return s.astype(np.float32) / 255.0 if s.dtype == np.uint8 else s


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
    and time do not grow with the label count; the ids left out are appended to ``dropped``.
    """
    if mask.dtype == bool or mask.dtype == np.uint8:
        binary = mask.astype(bool, copy=False) if mask.dtype == bool else mask > 0
        candidates = [(1, binary.view(np.uint8) * np.uint8(255), binary)]
    elif np.issubdtype(mask.dtype, np.floating):
        if not np.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise InputError("a float mask must be a soft mask with values in [0, 1] (NaN/inf or out of range found)")
        candidates = [(1, mask.astype(np.float32, copy=False), mask >= threshold)]
    elif np.issubdtype(mask.dtype, np.integer):
        if mask.min() < 0:
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
        for i in ids:
            b = mask == i
            candidates.append((i, b.view(np.uint8) * np.uint8(255), b))
    else:
        raise InputError(f"unsupported mask dtype {mask.dtype}")
    kept = []
    for oid, soft, binary in candidates:
        box = bounding_box(binary)
        if box is not None and np.count_nonzero(binary[box]) >= min_pixels:
            kept.append(MaskObject(oid, soft, binary, box))
    if not kept:
        raise InputError(f"empty mask: no object with at least {min_pixels} pixels")
    return kept
