"""``bgprompt train``'s settings: one ``TrainConfig`` per run (every field a CLI flag), its validation, the
``SPEC@WEIGHT`` parsing of ``--data`` and the learning-rate schedule (lr / 10 from ``--lr-drop-at`` on)."""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

from bgprompt_core.errors import BgpromptError
from bgprompt_core.method.config import ConfigError, FourierPromptConfig, PixelPromptConfig, PromptNetConfig
from bgprompt_core.settings import COMPOSITES

from ..data.bags import BagReadConfig, BagSelection, is_bag
from ..data.trust import TrustConfig

LOWER_IS_BETTER = {"si_rmse": True, "shape_err": True, "normal_cos": False, "loss": True}
BAG_FIELDS = tuple(f.name for f in dataclasses.fields(BagSelection))  # TrainConfig fields that are BagReadConfig's


class TrainingError(BgpromptError, RuntimeError):
    """Training cannot go on (a non-finite loss); the prompt on disk is the last good one."""


@dataclass(kw_only=True)
class TrainConfig(BagSelection):
    """One ``bgprompt train`` run; every field is the CLI flag of the same name (``--val-every`` -> val_every).

    Args:
        model (str): the frozen depth network D (registry name, hub id or directory).
        data (list[str]): training sets, ``SPEC[@WEIGHT]`` (render directories or FORMAT:PATH).
        val (list[str], default []): held-out sets for validation and checkpoint selection.
        out (str, default "prompt.safetensors"): the prompt checkpoint (finetune: a model directory).
        prompt (str, default "1bg"): "1bg" (one background, Sec. 3.1), "pnet" (Sec. 3.2) or "finetune" (the
            paper's baseline: the network's weights on a white background). "single": deprecated "1bg".
        param (str, default "fourier"): the background's parameterization: "fourier" or "pixel" ("Img space").
        composite (str, default "replace"): Eq. 1 as M * I + (1 - M) * B ("replace") or the "Additive" ablation.
        pnet_input (str, default "mask"): PNet's input: "mask" or "image" ("Img input" ablation).
        bias (bool, default True): PNet's learned 1-BG bias (False: "No bias"; flag --no-bias).
        pnet_downs (int, default 7), pnet_channels (int, default 64): the U-Net (paper: 7 and 64).
        pnet_combine (str, default "mean"): PNet + bias: "mean" (reference code) or "residual" (logits).
        init_bias (str | None): a trained 1-BG checkpoint that initialises the PNet bias.
        divisor (float, default 0.2): the Fourier irfft divisor (reference 0.2, Lucent 4.0).
        eq2_range (str, default "image"): Eq. 2's min/max over the "image" (paper) or the "object".
        steps (int, default 1000): optimisation steps (paper: 150k).
        batch (int, default 8): the GLOBAL batch (paper: 8); under torchrun each of N processes takes batch / N.
        lr (float, default 5e-4): learning rate (reference code 5e-4; the paper's text says 5e-5).
        lr_drop_at (float, default 0.8): lr / 10 from this fraction of the steps on.
        optimizer (str, default "sgd"): "sgd" (momentum, the paper's) or "adam".
        momentum (float, default 0.9): SGD momentum.
        size (int | None): the network input side (default: the network's own).
        recenter (bool, default False): augment by re-centring objects with a virtual camera.
        val_every (int, default 100): validate every this many steps.
        val_samples (int, default 64): validation samples per set (seed 1338, the paper's protocol).
        select_by (str, default "si_rmse"): the metric that picks the best checkpoint.
        collapse_warn (float, default 0.10): warn when this share of validation objects collapses.
        seed (int, default 0): the batch of step t is drawn from (seed, t) alone.
        device (str, default "auto"): torch device.
        logdir (str | None): TensorBoard directory.
        local_only (bool, default False): never download model files.
        init (str | None): warm start: "shipped" (the model's shipped prompt of --prompt's kind), a shipped name
            (1bg, pnet, tabletop) or a checkpoint; the prompt then takes the checkpoint's config.
        image_topic, info_topic, mask_topic, depth_topic, truth_topic, stride, sync, slop, mask_labels,
            min_pixels: which frames and objects of a bag become samples (inherited: data/bags.py BagSelection).
        smooth_sigma (float, default 1.0): px, smoothing of the sensor depth for Eq. 4's normals (data/trust.py).
        supervision (str, default "sensor"): what supervises bag samples: "sensor" (the trusted readings) or
            "truth" (the bag's ground truth on the object: a comparison run only, e.g. docs/grasp/bag_trained.md;
            a robot has no ground truth).
    """

    model: str
    data: list[str]
    val: list[str] = field(default_factory=list)
    out: str = "prompt.safetensors"
    prompt: str = "1bg"
    param: str = "fourier"
    composite: str = "replace"
    pnet_input: str = "mask"
    bias: bool = True
    pnet_downs: int = 7
    pnet_channels: int = 64
    pnet_combine: str = "mean"
    init_bias: str | None = None
    divisor: float = 0.2
    eq2_range: str = "image"
    steps: int = 1000
    batch: int = 8
    lr: float = 5e-4
    lr_drop_at: float = 0.8
    optimizer: str = "sgd"
    momentum: float = 0.9
    size: int | None = None
    recenter: bool = False
    val_every: int = 100
    val_samples: int = 64
    select_by: str = "si_rmse"
    collapse_warn: float = 0.10
    seed: int = 0
    device: str = "auto"
    logdir: str | None = None
    local_only: bool = False
    init: str | None = None
    smooth_sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.prompt == "single":
            warnings.warn("--prompt single is deprecated: use --prompt 1bg", DeprecationWarning, stacklevel=3)
            self.prompt = "1bg"
        choices = {"prompt": ("1bg", "pnet", "finetune"), "param": ("fourier", "pixel"),
                   "composite": COMPOSITES, "pnet_input": ("mask", "image"),
                   "pnet_combine": ("mean", "residual"),
                   "eq2_range": ("image", "object"), "optimizer": ("sgd", "adam"),
                   "select_by": tuple(LOWER_IS_BETTER)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.data:
            raise ConfigError("at least one --data set is needed")
        for name in ("steps", "batch", "val_every", "val_samples"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.init_bias and not (self.prompt == "pnet" and self.bias):
            raise ConfigError("--init-bias initialises a PNet's bias: use it with --prompt pnet (and a bias)")
        if self.init and self.prompt == "finetune":
            raise ConfigError("--init warm-starts a prompt: use it with --prompt 1bg or pnet")
        if self.init and self.init_bias:
            raise ConfigError("--init and --init-bias both initialise the prompt: give one")
        self.bag_config()  # validates the bag fields
        self.trust_config()

    def bag_config(self) -> BagReadConfig:
        return BagReadConfig(**self.selection(), recenter_fill=0.8)

    def trust_config(self) -> TrustConfig:
        return TrustConfig(smooth_sigma=self.smooth_sigma)

    @property
    def uses_bags(self) -> bool:
        return any(is_bag(p) for p, _ in parse_weighted(self.data)) or any(is_bag(p) for p in self.val)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def prompt_config(self, size: int):
        if self.prompt == "pnet":
            return PromptNetConfig(height=size, width=size, num_downs=self.pnet_downs,
                                   base_channels=self.pnet_channels, input=self.pnet_input, space=self.param,
                                   bias=self.bias, combine=self.pnet_combine, bias_prompt={"divisor": self.divisor})
        if self.param == "pixel":
            return PixelPromptConfig(height=size, width=size)
        return FourierPromptConfig(height=size, width=size, divisor=self.divisor)


def parse_weighted(specs: list[str]) -> list[tuple[str, float]]:
    """``SPEC`` or ``SPEC@WEIGHT``."""
    out = []
    for s in specs:
        path, _, w = s.rpartition("@") if "@" in s else (s, "", "1")
        out.append((path, float(w)))
    return out



def learning_rate(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * (0.1 if step >= cfg.lr_drop_at * cfg.steps else 1.0)

