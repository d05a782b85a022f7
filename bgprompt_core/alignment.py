"""Robust alignment of relative object depth to an RGB-D sensor's depth (metres), per object."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Alignment:
    scale: float
    shift: float
    coverage: float  # object pixels where the sensor has a valid reading / all object pixels
    inliers: float  # fraction of those kept by the robust fit
    used: int  # pixels used in the final fit


def fit_to_sensor(pred: np.ndarray, sensor: np.ndarray, mask: np.ndarray, mode: str = "scale",
                  min_pixels: int = 20, iterations: int = 3, k: float = 3.0) -> Alignment | None:
    """``sensor ~= scale * pred (+ shift)`` on object pixels where both are valid; None if too few.

    Starts from the median ratio (scale) or least squares (scale-shift), then refits on inliers whose
    residual is within ``k`` robust standard deviations (1.4826 * MAD) of the current fit, so holes,
    flying pixels and reflections in the sensor depth do not pull the fit.
    """
    if mode not in ("scale", "scale-shift"):
        raise ValueError(f"alignment mode must be 'scale' or 'scale-shift', got {mode!r}")
    obj = mask.astype(bool)
    ok = obj & np.isfinite(sensor) & (sensor > 0) & np.isfinite(pred) & (pred > 0)
    n_obj = int(obj.sum())
    coverage = float(ok.sum() / n_obj) if n_obj else 0.0
    if ok.sum() < max(min_pixels, 2):
        return None
    p, s = pred[ok].astype(np.float64), sensor[ok].astype(np.float64)

    def fit(sel: np.ndarray) -> tuple[float, float]:
        if mode == "scale":
            return float((p[sel] * s[sel]).sum() / max((p[sel] ** 2).sum(), 1e-12)), 0.0
        (a, b), *_ = np.linalg.lstsq(np.stack([p[sel], np.ones(sel.sum())], 1), s[sel], rcond=None)
        return float(a), float(b)

    keep = np.ones(len(p), bool)
    scale, shift = float(np.median(s / p)), 0.0  # robust start: the median ratio
    for _ in range(iterations):
        r = s - (scale * p + shift)
        centre = np.median(r)
        mad = 1.4826 * np.median(np.abs(r - centre)) + 1e-9
        new_keep = np.abs(r - centre) <= k * mad
        if new_keep.sum() < max(min_pixels, 2):
            break
        keep = new_keep
        scale, shift = fit(keep)
    return Alignment(scale, shift, coverage, float(keep.mean()), int(keep.sum()))
