"""Depth edges in a sensor's depth image, and which readings at them are flying pixels (metres, pixels).

A reading at a depth edge may be a flying pixel (a depth between the two surfaces, from the matching window or
the pixel's footprint straddling the step), or a true reading of either surface; the simulator
(``evaluation.sensor_model``) draws them with ``depth_edges``, fusion finds them with ``flying_pixels``.
"""
from __future__ import annotations

import cv2
import numpy as np


def depth_edges(z: np.ndarray, jump: float) -> np.ndarray:
    """Pixels next to a depth discontinuity: a valid 4-neighbour whose depth differs by more than ``jump`` * z
    (both valid: a step between two surfaces, not the border of a hole)."""
    edge = np.zeros(z.shape, bool)
    for a, b, sl_a, sl_b in ((z[:, 1:], z[:, :-1], (slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                             (z[1:], z[:-1], (slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
        near = np.minimum(a, b)
        step = (a > 0) & (b > 0) & (np.abs(a - b) > jump * near)
        edge[sl_a] |= step
        edge[sl_b] |= step
    return edge


def smooth_patches(sens: np.ndarray, valid: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Labels (int32, 0 = none) of the patches of ``valid`` readings that continue one surface: between two
    4-neighbours either the depth step is within ``tol``, or the surface through the next reading on either side
    continues linearly to within ``tol`` (the second difference: a steep side, seen at a grazing angle, steps by
    more than ``tol`` per pixel yet stays one surface; a reflection blob or an occluding part steps off the
    surface's slope). A pixel with a step that is neither, to a valid neighbour, is a patch border and belongs to
    none."""
    z = np.where(valid, sens, 0.0)
    step = np.zeros(sens.shape, bool)
    for ax in (0, 1):
        zt, vt = np.moveaxis(z, ax, 0), np.moveaxis(valid, ax, 0)
        tt = np.moveaxis(np.broadcast_to(tol, sens.shape), ax, 0)
        n = zt.shape[0]
        if n < 2:
            continue
        d = zt[1:] - zt[:-1]  # pair k: readings k and k + 1
        t = tt[1:]
        ok = np.abs(d) <= t
        if n >= 3:
            # the slope from the pair before (k - 1, k) and after (k + 1, k + 2), where both readings exist
            fwd = np.zeros_like(ok)
            fwd[1:] = vt[:-2] & (np.abs(d[1:] - d[:-1]) <= t[1:])
            bwd = np.zeros_like(ok)
            bwd[:-1] = vt[2:] & (np.abs(d[:-1] - d[1:]) <= t[:-1])
            ok |= fwd | bwd
        jump = vt[1:] & vt[:-1] & ~ok
        st = np.moveaxis(step, ax, 0)  # a view: writes land in ``step``
        st[1:] |= jump
        st[:-1] |= jump
    return cv2.connectedComponents((valid & ~step).astype(np.uint8), connectivity=4)[1]


def _agree_shifts(z: np.ndarray, inside: np.ndarray, jump: float):
    """Per 4-neighbour direction: (destination slice, source slice, agree) where ``agree`` marks pixel pairs that are
    both ``inside`` with readings and differ by at most ``jump`` of the nearer depth (no depth edge between them)."""
    h, w = z.shape
    for dst, src in (((slice(None), slice(1, None)), (slice(None), slice(None, w - 1))),
                     ((slice(None), slice(None, w - 1)), (slice(None), slice(1, None))),
                     ((slice(1, None), slice(None)), (slice(None, h - 1), slice(None))),
                     ((slice(None, h - 1), slice(None)), (slice(1, None), slice(None)))):
        a, b = z[dst], z[src]
        both = inside[dst] & inside[src] & (a > 0) & (b > 0)
        yield dst, src, both & (np.abs(a - b) <= jump * np.minimum(a, b))


def flying_pixels(z: np.ndarray, edges: np.ndarray, inside: np.ndarray, jump: float, reach: int = 4) -> np.ndarray:
    """The readings of ``edges`` (``depth_edges``) that continue no surface of ``inside``: no chain of at most
    ``reach`` agreeing 4-neighbours inside (``_agree_shifts``) links them to a reading off the edges. A true reading
    at the silhouette (a step to the table) or beside a flying pixel continues its surface and is no flying pixel;
    a depth between two surfaces, alone or in a short run of its like, is."""
    anchored = inside & (z > 0) & ~edges
    for _ in range(reach):
        grown = anchored.copy()
        for dst, src, agree in _agree_shifts(z, inside, jump):
            grown[dst] |= agree & anchored[src]
        if np.array_equal(grown, anchored):
            break
        anchored = grown
    return edges & inside & ~anchored
