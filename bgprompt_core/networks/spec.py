"""What bgprompt knows about a depth network, without importing torch: ``DepthNetSpec`` and the registry.

The spec travels with every exported graph (its ONNX metadata), so a deployed node reads it from there and
never imports torch or transformers (see runtime.build_runtime).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bgprompt_core.errors import ModelLoadError  # noqa: F401  (its home before errors.py: still importable here)
from bgprompt_core.networks.normalization import HALF, IMAGENET_MEAN, IMAGENET_STD, Normalization
from bgprompt_core.settings import OUTPUT_KINDS

PACKAGE_MODELS = Path(__file__).resolve().parents[1] / "models"



@dataclass(frozen=True)
class DepthNetSpec:
    """What bgprompt needs to know about a depth network."""

    name: str
    source: str  # hub id or local directory ("" when built from a config in memory)
    family: str  # transformers model_type
    input_size: tuple[int, int]  # default network input (H, W)
    size_multiple: int = 1
    fixed_size: bool = False  # only input_size is accepted (DPT-hybrid, DepthPro)
    square: bool = False  # H must equal W (plain-ViT DPT)
    mean: tuple[float, float, float] = HALF
    std: tuple[float, float, float] = HALF
    output_kind: str = "relative_disparity"

    def __post_init__(self) -> None:
        # specs also come from files (checkpoint and graph metadata): every field is checked for its type
        for key in ("name", "source", "family"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"network {key} must be a string, got {getattr(self, key)!r}")
        if not (len(self.input_size) == 2 and all(_positive_int(v) for v in self.input_size)) \
                or not _positive_int(self.size_multiple):
            raise ValueError(f"input_size must be two positive integers and size_multiple one, got "
                             f"{self.input_size!r} / {self.size_multiple!r}")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                           and math.isfinite(v) for v in values):
                raise ValueError(f"network {key} must be 3 finite numbers, got {values!r}")
        if not all(v > 0 for v in self.std):
            raise ValueError(f"network std must be positive, got {self.std!r}")
        if not isinstance(self.fixed_size, bool) or not isinstance(self.square, bool):
            raise ValueError(f"fixed_size and square must be true or false, got {self.fixed_size!r} / {self.square!r}")
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}")
        self.check_input_size(*self.input_size)

    @property
    def normalization(self) -> Normalization:
        """phi of Eq. 1 (applied to torch tensors; neither it nor the spec imports torch before that)."""
        return Normalization(self.mean, self.std)

    def check_input_size(self, h: int, w: int) -> None:
        """Raise ValueError naming the rule when (h, w) is not a valid network input."""
        if self.fixed_size and (h, w) != tuple(self.input_size):
            raise ValueError(f"{self.name} accepts only {self.input_size[0]}x{self.input_size[1]} inputs, got {h}x{w}")
        if self.square and h != w:
            raise ValueError(f"{self.name} needs square inputs, got {h}x{w}")
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"{self.name} needs input sides that are multiples of {self.size_multiple}, got {h}x{w}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as recorded in checkpoints and graphs: a model shipped inside this package is recorded as
        ``package:models/<name>`` so that a file built on one machine reads the same everywhere."""
        d = asdict(self)
        d["source"] = portable_source(self.source)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DepthNetSpec":
        """From ``to_dict``'s output (JSON); ValueError / TypeError / KeyError name what is wrong."""
        if not isinstance(d, dict):
            raise TypeError(f"a network spec must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        for key in ("input_size", "mean", "std"):
            if not isinstance(d.get(key), (list, tuple)):
                raise ValueError(f"network {key} must be a list, got {d.get(key)!r}")
            d[key] = tuple(d[key])
        d["source"] = local_source(str(d.get("source", "")))
        return cls(**d)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


PACKAGE_PREFIX = "package:models/"


def portable_source(source: str) -> str:
    """``source`` with a directory inside this package's ``models/`` written relative to it (else unchanged)."""
    if not source or source.startswith(PACKAGE_PREFIX) or not Path(source).is_dir():  # hub ids stay as they are
        return source
    try:
        inside = Path(source).resolve().relative_to(PACKAGE_MODELS)
    except (ValueError, OSError):
        return source
    return PACKAGE_PREFIX + inside.as_posix()


def local_source(source: str) -> str:
    """The inverse of ``portable_source`` on this install: ``package:models/x`` -> this package's models/x."""
    if source.startswith(PACKAGE_PREFIX):
        return str(PACKAGE_MODELS / source[len(PACKAGE_PREFIX):])
    return source


_DA_SIZES = {"small": "Small", "base": "Base", "large": "Large"}

REGISTRY: dict[str, DepthNetSpec] = {
    "dpt-large": DepthNetSpec("dpt-large", "Intel/dpt-large", "dpt", (384, 384), 32, square=True),
    "dpt-hybrid": DepthNetSpec("dpt-hybrid", "Intel/dpt-hybrid-midas", "dpt", (384, 384), 32, fixed_size=True),
    **{
        f"depth-anything-v2-{k}": DepthNetSpec(
            f"depth-anything-v2-{k}", f"depth-anything/Depth-Anything-V2-{v}-hf", "depth_anything", (518, 518), 14,
            mean=IMAGENET_MEAN, std=IMAGENET_STD)
        for k, v in _DA_SIZES.items()
    },
    "zoedepth-nyu-kitti": DepthNetSpec("zoedepth-nyu-kitti", "Intel/zoedepth-nyu-kitti", "zoedepth", (384, 512), 32,
                                       output_kind="metric_depth"),
    "glpn-nyu": DepthNetSpec("glpn-nyu", "vinvino02/glpn-nyu", "glpn", (480, 640), 32, mean=(0.0, 0.0, 0.0),
                             std=(1.0, 1.0, 1.0), output_kind="metric_depth"),
    "depth-pro": DepthNetSpec("depth-pro", "apple/DepthPro-hf", "depth_pro", (1536, 1536), 1, fixed_size=True,
                              output_kind="metric_depth"),
    # the embedded default: a small DPT-hybrid this project trains on rendered scenes and ships (docs/RESULTS.md)
    "mini": DepthNetSpec("mini", str(PACKAGE_MODELS / "mini"), "dpt", (128, 128), 16, fixed_size=True),
}
