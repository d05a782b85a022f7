"""How a prediction is fused with an RGB-D sensor's depth: ``FusionConfig``, its fields' one-line help and their
ROS-style parameters ``fusion_<field>`` (the node's, a params file's). The algorithm is in ``rgbd.fusion``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from bgprompt_core.errors import ConfigError
from bgprompt_core.rgbd.noise import D435_NOISE, DepthNoise, SensorNoiseSettings  # noqa: F401  (D435_NOISE: old home)
from bgprompt_core.rgbd.planes import SupportPlaneSettings
from bgprompt_core.settings import FUSIONS  # noqa: F401  (still importable from here)

HOLE_FILLS = ("hybrid", "prediction")


@dataclass(frozen=True)
class FusionConfig(SensorNoiseSettings, SupportPlaneSettings):
    """How a prediction is fused with an RGB-D sensor's depth (``fuse_object``; metres and pixels).

    Args:
        ring, plane_tol, plane_iterations, min_plane_inliers, see_through_tol: the support-plane test
            (``rgbd.planes.SupportPlaneSettings``).
        min_object_fraction (float, default 0.25): of the object's pixels; with fewer reliable readings the
            scale comes from the object's contact with the plane.
        consistency (float, default 0.010): m (plus 3 sensor sigmas); readings farther than this from the
            aligned prediction are disputed.
        contact_quantile (float, default 0.1): of the silhouette's z_plane / prediction ratios (its rim rests
            on the plane).
        residual_sigma (float, default 6.0): px, spread of the residual correction into filled pixels.
        noise_floor, noise_linear, noise_quadratic (float, default the d435-like camera's: 0, 0, 0.0037): the
            sensor's RMS error ``floor + linear z + quadratic z^2`` (m); set them to your camera's.
        edge_jump (float, default 0.03): relative depth step that makes a sensor pixel a depth edge.
        min_agreement (float, default 0.5): share of the object's reliable readings the aligned prediction must
            agree with; below it the object falls back to sensor-only.
        max_residual (float, default 0.015): m (plus 3 sensor sigmas); a larger robust residual spread of the
            readings around the aligned prediction falls back to sensor-only.
        max_extent_ratio (float, default 3.0): a support-contact placement whose depth range along the rays
            (5-95%) exceeds this many times the object's widest lateral extent is implausible (sensor-only); real
            objects measured 1.8 at most (493 objects, procedural and scanned, docs/grasp's frames).
        flat_relief (float, default 0.05): m; a sensor-only object whose readings off the support plane lie at most
            this far in front of it along the rays (95%) is flat (a tray, a plate, a lying book): its readings at
            the plane are its own and are kept, as the raw sensor's; a taller object's majority at the plane is
            the table seen through glass. 0: never.
        hole_fill (str, default "hybrid"): "hybrid" (small interior holes from the sensor's neighbourhood, the
            rest from the prediction) or "prediction" (every hole from the prediction).
        max_interior_hole (float, default 0.02): of the object's pixels: the largest hole "hybrid" interpolates.
    """

    min_object_fraction: float = 0.25
    consistency: float = 0.010
    contact_quantile: float = 0.1
    residual_sigma: float = 6.0
    edge_jump: float = 0.03
    min_agreement: float = 0.5
    max_residual: float = 0.015
    max_extent_ratio: float = 3.0
    flat_relief: float = 0.05
    hole_fill: str = "hybrid"
    max_interior_hole: float = 0.02

    def __post_init__(self) -> None:
        self.check_plane("fusion")
        for name in ("consistency", "residual_sigma", "max_residual", "edge_jump", "max_extent_ratio"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"fusion {name} must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.min_object_fraction <= 1 or not 0 <= self.contact_quantile < 0.5:
            raise ConfigError("fusion min_object_fraction must lie in (0, 1], contact_quantile in [0, 0.5)")
        if not 0 <= self.flat_relief < 1:  # NaN compares False
            raise ConfigError(f"fusion flat_relief must lie in [0, 1) m, got {self.flat_relief!r}")
        if not 0 <= self.min_agreement <= 1 or not 0 <= self.max_interior_hole <= 1:
            raise ConfigError("fusion min_agreement and max_interior_hole must lie in [0, 1]")
        if self.hole_fill not in HOLE_FILLS:
            raise ConfigError(f"fusion hole_fill must be one of {HOLE_FILLS}, got {self.hole_fill!r}")
        self.noise  # validates the noise terms

    @staticmethod
    def for_noise(noise: DepthNoise, **kw) -> "FusionConfig":
        """A config whose sensor noise is ``noise`` (e.g. ``sensor_model.PRESETS[name].noise``)."""
        return FusionConfig(noise_floor=noise.floor, noise_linear=noise.linear, noise_quadratic=noise.quadratic, **kw)


FUSION_FIELDS = tuple(f.name for f in fields(FusionConfig))
FUSION_HELP = {  # one line per field, for the node's parameter descriptions
    "ring": "px, width of the ring around each object where the support plane is sought",
    "plane_tol": "m (+3 sensor sigmas): RANSAC inlier distance to the support plane",
    "plane_iterations": "RANSAC iterations of the support plane",
    "min_plane_inliers": "fewer ring points on the plane: no support plane",
    "see_through_tol": "m (+3 sensor sigmas): readings this close to the support plane or beyond were seen through",
    "min_object_fraction": "share of an object's pixels with reliable readings below which the scale comes from "
                           "its contact with the support plane",
    "consistency": "m (+3 sensor sigmas): readings farther from the aligned prediction are disputed",
    "contact_quantile": "quantile of the silhouette's plane/prediction ratios used as the support-contact scale",
    "residual_sigma": "px, spread of the sensor-minus-prediction correction into filled pixels",
    "noise_floor": "m, the sensor's RMS error at any depth (sigma = floor + linear z + quadratic z^2)",
    "noise_linear": "the sensor's RMS error per metre of depth (time of flight: ~0.001)",
    "noise_quadratic": "1/m, the sensor's stereo RMS error term subpixel / (focal_px * baseline) (D435: 0.0037)",
    "edge_jump": "relative depth step that makes a sensor pixel a depth edge (flying pixels)",
    "min_agreement": "share of an object's readings the aligned prediction must agree with, else sensor-only",
    "max_residual": "m (+3 sensor sigmas): a larger robust residual spread around the prediction: sensor-only",
    "max_extent_ratio": "a support-contact placement deeper along the rays than this many times its width: "
                        "sensor-only",
    "flat_relief": "m: a sensor-only object whose off-plane readings lie at most this far in front of the plane "
                   "(95%) is flat and keeps its readings at the plane (0: never)",
    "hole_fill": "hybrid (small interior holes from the sensor's neighbourhood, the rest from the prediction) or "
                 "prediction (every hole from the prediction)",
    "max_interior_hole": "share of an object's pixels: the largest hole hybrid fill interpolates from the sensor",
}


PARAM_PREFIX = "fusion_"


def fusion_config_from_params(params: dict) -> FusionConfig:
    """A FusionConfig from ROS-style parameters ``fusion_<field>`` (the node's, a params file's); fields not
    given keep their defaults; other keys are ignored."""
    kw = {name: params[PARAM_PREFIX + name] for name in FUSION_FIELDS if PARAM_PREFIX + name in params}
    return FusionConfig(**kw)


def fusion_params(cfg: FusionConfig) -> dict:
    """The ROS-style parameters of a FusionConfig (inverse of ``fusion_config_from_params``)."""
    return {PARAM_PREFIX + name: getattr(cfg, name) for name in FUSION_FIELDS}
