"""``ObjectDepthResult``: what ``ObjectDepthEstimator.estimate`` returns for one frame."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bgprompt_core.geometry import backproject_np
from bgprompt_core.rgbd.fusion import FusionReport


@dataclass
class ObjectDepthResult:
    depth: np.ndarray  # (H, W) float32, NaN outside objects / invalid
    valid: np.ndarray  # (H, W) bool
    instance: np.ndarray  # (H, W) int32 object id, 0 = none
    object_ids: list[int]
    K: np.ndarray  # intrinsics of depth / points (the input's)
    units: str  # "relative" (up to scale) or "metres"
    fusion: dict[int, FusionReport | None] = field(default_factory=dict)  # align-to-sensor: per object
    source: np.ndarray | None = None  # (H, W) uint8: SOURCE_SENSOR / _PREDICTED / _INTERPOLATED, 0 = none
    timing_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # object id -> {reason: pixels} for object pixels left without depth: "off_view" (outside the network's view),
    # "unseen" (the object vanished at the network's resolution), "fusion" (no scale to the sensor)
    no_depth: dict[int, dict[str, int]] = field(default_factory=dict)
    boxes: list[tuple[slice, slice]] = field(default_factory=list)  # where depth may be: the objects' boxes
    _points: np.ndarray | None = field(default=None, repr=False)

    def limit_depth(self, max_depth: float) -> "ObjectDepthResult":
        """Drop every point farther than ``max_depth`` (in place; returns self)."""
        if math.isinf(max_depth):
            return self
        far = self.depth > max_depth  # NaN > x is False
        if far.any():
            self.depth[far] = np.nan
            self.valid[far] = False
            self.instance[far] = 0
            if self.source is not None:
                self.source[far] = 0
            self._points = None
        return self

    @property
    def points(self) -> np.ndarray:
        """Organized (H, W, 3) float32 camera optical frame points, NaN where invalid.

        Computed on first use (a full-resolution pass): callers that only need depth do not pay for it.
        """
        if self._points is None:
            if not self.boxes:
                self._points = backproject_np(self.depth, self.K)
            else:  # NaN everywhere, rays x depth on the objects' boxes only
                self._points = np.full((*self.depth.shape, 3), np.nan, np.float32)
                for box in self.boxes:
                    self._points[box] = backproject_np(self.depth[box], self.K, origin=(box[0].start, box[1].start))
        return self._points


def grown(box: tuple[slice, slice], margin: int, h: int, w: int) -> tuple[slice, slice]:
    """``box`` grown by ``margin`` pixels on every side, clipped to the (h, w) frame."""
    rows, cols = box
    return (slice(max(rows.start - margin, 0), min(rows.stop + margin, h)),
            slice(max(cols.start - margin, 0), min(cols.stop + margin, w)))
