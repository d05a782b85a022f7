"""``bgprompt eval-grasp``'s settings: the summary metrics, the params file whose node settings are measured,
``GraspEvalConfig`` and the names of the methods in the tables."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bgprompt_core.evaluation import sensor_model as sm
from bgprompt_core.method.config import ConfigError
from bgprompt_core.rgbd.fusion import FusionConfig, fusion_config_from_params

SUMMARY = ("chamfer_mm", "accuracy_10mm", "completeness_10mm", "completeness_5mm", "centroid_mm", "box_extent_mm",
           "grasp_width_mm", "grasp_centre_mm")
MAX_QUERIES = 8000  # GT surface samples per object whose distance to a cloud is measured (a fixed random subset)
FUSION_NOISES = ("preset", "params")  # the noise fusion assumes: each sensor preset's, or the params file's
DEFAULT_PARAMS = Path(__file__).resolve().parents[3] / "config" / "object_depth_rgbd.yaml"


@dataclass(frozen=True)
class GraspEvalConfig:
    """``bgprompt eval-grasp``: object clouds in metres, prompt + fusion against the sensor and cv2.inpaint.

    Args:
        model (str, default "mini"): the frozen depth network.
        prompts (tuple[str], default ("none", "1bg", "pnet", "tabletop")): prompts fused ("none": white).
        shipped_prompt (str | None): the prompt the goals are judged on (default: the params file's ``prompt``).
        oracle_prompt (str | None): the prompt of the oracle and fill-comparison rows; default the shipped one.
        sensors (tuple[str], default every preset): sensor presets (``sensor_model.PRESETS``); "stored" is the
            render's own sensor depth.
        count (int | None): at most this many frames per data set (None: all).
        min_pixels (int, default 150): objects with fewer mask pixels are left out.
        inpaint_radius (int, default 5): cv2.inpaint's radius for the inpainting baselines.
        align (str, default "scale-shift"), recenter (bool, default True): the node's settings (from the params
            file when one is given).
        fusion (FusionConfig): fusion settings (from the params file's fusion_* when one is given); the noise
            terms are replaced by each preset's unless ``fusion_noise`` is "params".
        fusion_noise (str, default "preset"): the sensor noise fusion assumes: "preset" (each sensor preset's own,
            a node whose fusion_noise_* describe its camera) or "params" (the params file's for every preset: a
            camera the node's parameters do not describe).
        compare_fill (bool, default True): add the "fill: prediction" rows for the oracle prompt.
        bootstrap (int, default 1000): resamples of the goals' ratio intervals.
        local_only (bool, default True): never download model files.
    """

    model: str = "mini"
    prompts: tuple[str, ...] = ("none", "1bg", "pnet", "tabletop")
    shipped_prompt: str | None = None
    oracle_prompt: str | None = None
    sensors: tuple[str, ...] = tuple(sm.PRESETS)
    count: int | None = None
    min_pixels: int = 150
    inpaint_radius: int = 5
    align: str = "scale-shift"
    recenter: bool = True
    fusion: FusionConfig = field(default_factory=FusionConfig)
    fusion_noise: str = "preset"
    compare_fill: bool = True
    bootstrap: int = 1000
    local_only: bool = True

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ConfigError("at least one prompt (none is the white background)")
        if self.min_pixels < 3 or self.inpaint_radius < 1:
            raise ConfigError("min_pixels must be >= 3 and inpaint_radius >= 1")
        bad = [s for s in self.sensors if s != "stored" and s not in sm.PRESETS]
        if bad or not self.sensors:
            raise ConfigError(f"unknown sensors {bad}; choose from {('stored', *sm.PRESETS)}")
        if self.fusion_noise not in FUSION_NOISES:
            raise ConfigError(f"fusion_noise must be one of {FUSION_NOISES}, got {self.fusion_noise!r}")
        if self.goal_prompt not in self.prompts:
            raise ConfigError(f"the shipped prompt {self.goal_prompt!r} must be among the prompts {self.prompts}")

    @property
    def goal_prompt(self) -> str:
        return self.shipped_prompt or self.prompts[-1]

    @staticmethod
    def from_params_file(path: str | Path = DEFAULT_PARAMS, **kw) -> "GraspEvalConfig":
        """The node's settings from a ROS params YAML (``/**`` or ``object_depth``): prompt, align, recenter and
        fusion_*: what ships is what is measured."""
        p = read_node_params(path)
        for key in ("scale", "fusion"):
            want = {"scale": "align-to-sensor", "fusion": "fill"}[key]
            if p.get(key) != want:
                raise ConfigError(f"{path}: eval-grasp measures {key}: {want}, the file has {p.get(key)!r}")
        return GraspEvalConfig(shipped_prompt=p.get("prompt", "1bg"), align=p.get("align", "scale-shift"),
                               recenter=bool(p.get("recenter", False)), fusion=fusion_config_from_params(p), **kw)


def read_node_params(path: str | Path, node: str = "object_depth") -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    out: dict = {}
    for key in ("/**", node, f"/{node}"):
        out.update((data.get(key) or {}).get("ros__parameters", {}))
    return out


def _prompt_name(p: str) -> str:
    return {"none": "white", "1bg": "1-BG", "default": "1-BG", "pnet": "PNet", "tabletop": "tabletop 1-BG"}.get(p, Path(p).stem)


def fused_name(p: str) -> str:
    return f"{_prompt_name(p)} + fusion"


PREDICTION_FILL = ", fill: prediction"
