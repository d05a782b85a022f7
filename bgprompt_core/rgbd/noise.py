"""The noise model of a depth camera's readings (metres), which fusion and the sensor simulator both use.

Kept apart from ``sensor_model`` (the simulator) so that ``fusion`` does not import a simulator to run on a
robot: fusion's tolerances use the sigma of the same model the simulator draws its noise from. (The depth-edge
test both apply is in ``rgbd.edges``.)

Noise: ``sigma(z) = floor + linear * z + quadratic * z^2`` covers the cameras we model:
- active / passive stereo: ``quadratic = subpixel / (f * b)`` (disparity error ``subpixel`` px, focal ``f`` px,
  baseline ``b`` m; Intel, "Tuning depth cameras for best performance", D400 series);
- time of flight: a floor plus a share of the distance (Azure Kinect DK: random error std <= 17 mm,
  systematic error < 11 mm + 0.1% of the distance; confirmed by Tolgyessy et al., Sensors 21(2):413, 2021).
"""
from __future__ import annotations

import math
import warnings
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


D435_NOISE = stereo_noise(430.0, 0.050, 0.08)  # the d435-like camera: sigma = 0.0037 z^2 (m)


@dataclass(frozen=True)
class SensorNoiseSettings:
    """A config's sensor noise terms (``FusionConfig``'s and the bag trust rules'): ``sigma(z) = noise_floor +
    noise_linear z + noise_quadratic z^2`` (m), by default the d435-like camera's; set them to your camera's."""

    noise_floor: float = D435_NOISE.floor
    noise_linear: float = D435_NOISE.linear
    noise_quadratic: float = D435_NOISE.quadratic

    @property
    def noise(self) -> DepthNoise:
        """The terms as a ``DepthNoise`` (validates them)."""
        return DepthNoise(self.noise_floor, self.noise_linear, self.noise_quadratic)


def __getattr__(name: str):
    """``depth_edges`` moved to ``bgprompt_core.rgbd.edges``: served from there with a DeprecationWarning."""
    if name == "depth_edges":
        from bgprompt_core.rgbd import edges

        warnings.warn(f"{__name__}.depth_edges moved to bgprompt_core.rgbd.edges.depth_edges; import it from there",
                      DeprecationWarning, stacklevel=2)
        return edges.depth_edges
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
