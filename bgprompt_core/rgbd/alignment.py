"""Robust alignment of relative object depth to an RGB-D sensor's depth (metres), per object."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bgprompt_core.settings import ALIGNS


@dataclass(frozen=True)
class Alignment:
    scale: float
    shift: float
    coverage: float  # object pixels where the sensor has a valid reading / all object pixels
    inliers: float  # fraction of those kept by the robust fit
    used: int  # pixels used in the final fit


def least_squares(p: np.ndarray, s: np.ndarray, mode: str) -> tuple[np.float64, np.float64 | float]:
    """The least-squares ``s ~= scale * p (+ shift)`` of 1-D float64 arrays: "scale": the closed form
    ``sum(p s) / sum(p^2)`` (Eq. 3's, in numpy), shift 0; "scale-shift": numpy's ``lstsq`` on ``[p, 1]``.

    numpy scalars, not Python floats: ``scale * image`` of a float32 image is float64 with them, float32 with a
    Python float (NEP 50), so a caller picks its dtype explicitly (``fit_to_sensor`` returns Python floats).
    """
    if mode == "scale":
        return (p * s).sum() / max((p ** 2).sum(), 1e-12), 0.0
    (a, b), *_ = np.linalg.lstsq(np.stack([p, np.ones(len(p))], 1), s, rcond=None)
    return a, b


def _consensus(p: np.ndarray, s: np.ndarray, mode: str, tol: np.ndarray, rng: np.random.Generator,
               trials: int) -> np.ndarray:
    """RANSAC start: the (scale[, shift]) from 1 (scale) or 2 (scale-shift) random readings that the most readings
    agree with to within ``tol``; returns that inlier mask. A reflection or a blob of wrong readings, even a large
    minority, cannot pull a consensus the way it pulls a mean or a median ratio."""
    n = len(p)
    if mode == "scale":
        i = rng.integers(0, n, trials)
        a, b = s[i] / p[i], np.zeros(trials)
    else:
        i, j = rng.integers(0, n, trials), rng.integers(0, n, trials)
        dp = p[i] - p[j]
        ok = np.abs(dp) > 1e-9 * np.maximum(np.abs(p[i]), 1e-9)
        if not ok.any():
            return np.ones(n, bool)
        i, j, dp = i[ok], j[ok], dp[ok]
        a = (s[i] - s[j]) / dp
        b = s[i] - a * p[i]
    t = np.broadcast_to(tol, p.shape)
    counts = np.zeros(len(a), np.int64)
    for start in range(0, n, 4096):  # (readings x hypotheses) in bounded blocks
        sl = slice(start, start + 4096)
        counts += (np.abs(s[sl, None] - (p[sl, None] * a + b)) <= t[sl, None]).sum(0)
    k = int(np.argmax(counts))
    return np.abs(s - (a[k] * p + b[k])) <= t


def fit_to_sensor(pred: np.ndarray, sensor: np.ndarray, mask: np.ndarray, mode: str = "scale",
                  min_pixels: int = 20, iterations: int = 3, k: float = 3.0, tol: np.ndarray | float | None = None,
                  trials: int = 200, rng: np.random.Generator | None = None) -> Alignment | None:
    """``sensor ~= scale * pred (+ shift)`` on object pixels where both are valid; None if too few.

    The start is not a least-squares fit: without ``tol`` it is the median ratio ``median(sensor / pred)``
    (shift 0, in "scale-shift" mode too); with ``tol`` (m, scalar or per pixel) it is the least-squares fit on
    the readings that agree with the consensus of ``trials`` minimal samples (RANSAC) to within ``tol`` (on all
    readings when fewer than ``min_pixels`` agree). Then, ``iterations`` times, the readings whose residual lies
    within ``k`` robust standard deviations (1.4826 * MAD; median and MAD over all readings without ``tol``, over
    the last kept ones with it) of the current fit are kept and refitted by least squares (``least_squares``),
    so holes, flying pixels and reflections in the sensor depth do not pull the fit; an iteration that would keep
    fewer than ``min_pixels`` stops. The scale may come out negative (a prediction anti-correlated with the
    readings): callers check it.
    """
    if mode not in ALIGNS:
        raise ValueError(f"alignment mode must be 'scale' or 'scale-shift', got {mode!r}")
    obj = mask.astype(bool)
    ok = obj & np.isfinite(sensor) & (sensor > 0) & np.isfinite(pred) & (pred > 0)
    n_obj = int(obj.sum())
    coverage = float(ok.sum() / n_obj) if n_obj else 0.0
    if ok.sum() < max(min_pixels, 2):
        return None
    p, s = pred[ok].astype(np.float64), sensor[ok].astype(np.float64)

    def fit(sel: np.ndarray) -> tuple[float, float]:
        scale, shift = least_squares(p[sel], s[sel], mode)
        return float(scale), float(shift)

    keep = np.ones(len(p), bool)
    if tol is None:
        scale, shift = float(np.median(s / p)), 0.0  # robust start: the median ratio
    else:
        t = np.broadcast_to(np.asarray(tol, np.float64), sensor.shape)[ok] if np.ndim(tol) else float(tol)
        start = _consensus(p, s, mode, t, np.random.default_rng(0) if rng is None else rng, trials)
        if start.sum() >= max(min_pixels, 2):
            keep = start
        scale, shift = fit(keep)
    for _ in range(iterations):
        r = s - (scale * p + shift)
        centre = np.median(r[keep]) if tol is not None else np.median(r)
        mad = 1.4826 * np.median(np.abs(r[keep] - centre) if tol is not None else np.abs(r - centre)) + 1e-9
        new_keep = np.abs(r - centre) <= k * mad
        if new_keep.sum() < max(min_pixels, 2):
            break
        keep = new_keep
        scale, shift = fit(keep)
    return Alignment(scale, shift, coverage, float(keep.mean()), int(keep.sum()))
