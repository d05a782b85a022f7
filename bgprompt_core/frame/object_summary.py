"""Per-object summaries for grasp planners and RViz: point count, centroid, oriented box, sensor share."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bgprompt_core.geometry import backproject_np, oriented_box
from bgprompt_core.rgbd.fusion import SOURCE_SENSOR


@dataclass(frozen=True)
class ObjectSummary:
    """One object's cloud in the camera optical frame (metres)."""

    id: int
    points: int
    centroid: np.ndarray  # (3,)
    box_centre: np.ndarray  # (3,)
    box_quaternion: np.ndarray  # (x, y, z, w): box axes (longest first) in the camera frame
    box_extents: np.ndarray  # (3,) sorted descending
    sensor_fraction: float | None  # share of the points that are sensor readings (None: no fusion)


def summarize_objects(depth: np.ndarray, instance: np.ndarray, K: np.ndarray, ids: list[int],
                      source: np.ndarray | None = None, min_points: int = 10) -> list[ObjectSummary]:
    """A summary per object id with at least ``min_points`` valid points, computed on its bounding box only."""
    from scipy.spatial.transform import Rotation  # lazy: scipy costs a deployed node ~20 MiB until markers are asked for

    out = []
    for oid in ids:
        sel = instance == oid
        rows, cols = np.nonzero(sel.any(1))[0], np.nonzero(sel.any(0))[0]
        if not len(rows):
            continue
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        local = sel[box] & np.isfinite(depth[box])
        if local.sum() < min_points:
            continue
        crop = np.where(local, depth[box], np.nan).astype(np.float32)
        pts = backproject_np(crop, K, origin=(box[0].start, box[1].start))[local].astype(np.float64)
        centre, axes, extents = oriented_box(pts)
        R = axes.T.copy()
        if np.linalg.det(R) < 0:
            R[:, 2] *= -1
        share = float((source[box][local] == SOURCE_SENSOR).mean()) if source is not None else None
        out.append(ObjectSummary(int(oid), len(pts), pts.mean(0), centre, Rotation.from_matrix(R).as_quat(),
                                 extents, share))
    return out
