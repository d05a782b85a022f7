"""Dataclass configs with validation for prompts and the depth transform.

Each config round-trips through ``to_dict`` / ``from_dict`` so that checkpoints can store it as JSON.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bgprompt_core.errors import ConfigError



def _positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _positive_float(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


class _Serializable:
    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names - {"type"}
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class FourierPromptConfig(_Serializable):
    """The 1-BG prompt (paper Sec. 3.1): one background B learned as its Fourier spectrum (Olah et al. 2017).

    Args:
        height (int, default 384), width (int, default 384): the prompt's resolution, the network input's.
        decay (float, default 1.0): the spectrum is scaled by 1 / f^decay (1/f natural-image statistics);
            in (0, 4].
        divisor (float, default 0.2): B = irfft2(scale * spectrum) / divisor; 0.2 in the reference code,
            4.0 in Lucent.
        init_std (float, default 0.01): the spectrum starts as N(0, init_std^2).
    """

    kind: ClassVar[str] = "fourier"
    height: int = 384
    width: int = 384
    decay: float = 1.0
    divisor: float = 0.2
    init_std: float = 0.01

    def __post_init__(self) -> None:
        _positive_int("height", self.height)
        _positive_int("width", self.width)
        _positive_float("decay", self.decay)
        if self.decay > 4:  # the 1/f^decay scale reaches max(H, W)^decay: beyond ~4 it overflows to inf/NaN
            raise ConfigError(f"decay must lie in (0, 4] (1 in the paper and Lucent), got {self.decay}")
        _positive_float("divisor", self.divisor)
        _positive_float("init_std", self.init_std)


@dataclass(frozen=True)
class PixelPromptConfig(_Serializable):
    """1-BG in image space (the paper's "Img space" ablation): B is learned per pixel, background sigmoid(B).

    Args:
        height (int, default 384), width (int, default 384): the prompt's resolution.
        init_std (float, default 1.0): the logits start as N(0, init_std^2).
    """

    kind: ClassVar[str] = "pixel"
    height: int = 384
    width: int = 384
    init_std: float = 1.0

    def __post_init__(self) -> None:
        _positive_int("height", self.height)
        _positive_int("width", self.width)
        _positive_float("init_std", self.init_std)


@dataclass(frozen=True)
class PromptNetConfig(_Serializable):
    """PNet (paper Sec. 3.2): a pix2pix U-Net from the object mask M to a background B = PNet(M) (+ a 1-BG bias).

    Args:
        height (int, default 384), width (int, default 384): the prompt's resolution.
        num_downs (int, default 7): U-Net downsamplings (paper: 7).
        base_channels (int, default 64): U-Net base width (paper: 64, about 41.8M parameters).
        input (str, default "mask"): "mask", or "image" (the masked image: the "Img input" ablation).
        space (str, default "fourier"): the U-Net maps the mask's spectrum to the background's ("fourier"), or
            pixels to pixels ("pixel": the "Img space" ablation).
        bias (bool, default True): add a learned unconditional 1-BG (False: the "No bias" ablation).
        combine (str, default "mean"): with bias, the mean of the two images (reference code), or "residual":
            sigmoid(gain * x + B_bias), which starts exactly at the bias.
        gain (float, default 40.0): sigmoid(gain * irfft(...)) as in the reference code.
        bias_prompt (dict, default {}): FourierPromptConfig fields of the bias (its size is the PNet's).
    """

    kind: ClassVar[str] = "pnet"
    height: int = 384
    width: int = 384
    num_downs: int = 7
    base_channels: int = 64
    input: str = "mask"
    space: str = "fourier"
    bias: bool = True
    combine: str = "mean"
    gain: float = 40.0
    bias_prompt: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive_int("height", self.height)
        _positive_int("width", self.width)
        _positive_int("num_downs", self.num_downs)
        _positive_int("base_channels", self.base_channels)
        _choice("input", self.input, ("mask", "image"))
        _choice("space", self.space, ("fourier", "pixel"))
        _choice("combine", self.combine, ("mean", "residual"))
        if self.combine == "residual" and not self.bias:
            raise ConfigError("combine 'residual' adds the U-Net to the bias's logits: it needs bias")
        _positive_float("gain", self.gain)
        self.bias_config()  # validates bias_prompt

    def bias_config(self) -> FourierPromptConfig:
        extra = {k: v for k, v in self.bias_prompt.items() if k not in ("height", "width", "type")}
        return FourierPromptConfig(height=self.height, width=self.width, **extra)


PromptConfig = FourierPromptConfig | PixelPromptConfig | PromptNetConfig
_PROMPT_CONFIGS = {c.kind: c for c in (FourierPromptConfig, PixelPromptConfig, PromptNetConfig)}


def prompt_config_from_dict(data: dict[str, Any]) -> PromptConfig:
    """Inverse of ``cfg.to_dict()`` for any prompt config."""
    kind = data.get("type")
    if kind not in _PROMPT_CONFIGS:
        raise ConfigError(f"unknown prompt type {kind!r}; expected one of {sorted(_PROMPT_CONFIGS)}")
    return _PROMPT_CONFIGS[kind].from_dict(data)


@dataclass(frozen=True)
class DepthTransformConfig(_Serializable):
    """Eq. 2, from a disparity network's output d to depth: D = 1 / max((d - min d) / (max d - min d), floor).

    Args:
        range (str, default "image"): min and max over the whole image, prompt included (paper, reference
            code), or over the object only ("object").
        floor (float, default 0.05): the normalised disparity's floor, so depth lies in [1, 1 / floor].
    """

    kind: ClassVar[str] = "eq2"
    range: str = "image"
    floor: float = 0.05

    def __post_init__(self) -> None:
        _choice("range", self.range, ("image", "object"))
        if not (0.0 < self.floor < 1.0):
            raise ConfigError(f"floor must lie in (0, 1), got {self.floor!r}")
