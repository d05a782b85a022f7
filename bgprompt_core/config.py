"""Dataclass configs with validation for prompts and the depth transform.

Each config round-trips through ``to_dict`` / ``from_dict`` so that checkpoints can store it as JSON.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent."""


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
    """1-BG in Fourier space. ``divisor``: 0.2 in the reference code, 4.0 in Lucent."""

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
    """1-BG in image space (the paper's "Img space" ablation), logits init N(0, init_std^2)."""

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
    """PNet. The paper's network: num_downs=7, base_channels=64 (about 41.8M parameters)."""

    kind: ClassVar[str] = "pnet"
    height: int = 384
    width: int = 384
    num_downs: int = 7
    base_channels: int = 64
    input: str = "mask"  # "mask" | "image" (the "Img input" ablation)
    space: str = "fourier"  # "fourier" | "pixel" (the "Img space" ablation)
    bias: bool = True  # False: the "No bias" ablation
    combine: str = "mean"  # with bias: "mean" of the two images (reference code) | "residual" in logits
    gain: float = 40.0  # sigmoid(gain * irfft(...)) as in the reference code
    bias_prompt: dict = field(default_factory=dict)  # FourierPromptConfig fields for the bias

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
    """Eq. 2 settings. ``range``: min/max over the whole image (paper, reference code) or the object."""

    kind: ClassVar[str] = "eq2"
    range: str = "image"
    floor: float = 0.05

    def __post_init__(self) -> None:
        _choice("range", self.range, ("image", "object"))
        if not (0.0 < self.floor < 1.0):
            raise ConfigError(f"floor must lie in (0, 1), got {self.floor!r}")
