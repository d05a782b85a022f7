"""What fusion and the sensor simulator both need to know about a depth camera's readings (metres, pixels).

Kept apart from ``sensor_model`` (the simulator) so that ``fusion`` does not import a simulator to run on a
robot: the noise model whose sigma fusion's tolerances use, and the depth-edge test both apply.

Noise: ``sigma(z) = floor + linear * z + quadratic * z^2`` covers the cameras we model:
- active / passive stereo: ``quadratic = subpixel / (f * b)`` (disparity error ``subpixel`` px, focal ``f`` px,
  baseline ``b`` m; Intel, "Tuning depth cameras for best performance", D400 series);
- time of flight: a floor plus a share of the distance (Azure Kinect DK: random error std <= 17 mm,
  systematic error < 11 mm + 0.1% of the distance; confirmed by Tolgyessy et al., Sensors 21(2):413, 2021).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bgprompt_core.method.config import ConfigError


@dataclass(frozen=True)
class DepthNoise:
    """RMS depth error of a camera's readings: ``sigma(z) = floor + linear * z + quadratic * z^2`` (m).

    Args:
        floor (float, default 0): m, the error at any depth.
        linear (float, default 0): m per m, the share of the depth.
        quadratic (float, default 0): 1/m, the stereo term (``subpixel / (f b)``).
    """

    floor: float = 0.0
    linear: float = 0.0
    quadratic: float = 0.0

    def __post_init__(self) -> None:
        for name in ("floor", "linear", "quadratic"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"depth noise {name} must be a finite number >= 0, got {v!r}")

    def sigma(self, z: np.ndarray | float) -> np.ndarray | float:
        """RMS error (m) of a reading at depth z (m)."""
        return self.floor + self.linear * np.asarray(z) + self.quadratic * np.square(z)


def stereo_noise(focal_px: float, baseline: float, subpixel: float) -> DepthNoise:
    """A stereo camera's noise: ``sigma_z = z^2 * subpixel / (f * b)`` (the D400 tuning guide's RMS error)."""
    return DepthNoise(quadratic=subpixel / (focal_px * baseline))


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
