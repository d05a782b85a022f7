"""The frozen depth networks: loading (registry name, hub id or local directory) and the ``DepthNet`` wrapper.

A ``DepthNetSpec`` declares what the method needs to know about a network: its input-size rule, its
normalization phi (mean/std), and its output kind (relative disparity needs Eq. 2). ``load_depth_net``
accepts a registry name ("dpt-large"), a hub id ("Intel/dpt-large") or a local directory in
Hugging Face layout; nothing is downloaded at import time. Networks are always frozen: ``eval()``
and ``requires_grad_(False)`` (the reference code forgot eval mode and let BatchNorm drift).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn

from bgprompt_core.errors import ModelLoadError
from bgprompt_core.networks.normalization import HALF, IMAGENET_MEAN, IMAGENET_STD, Normalization
from bgprompt_core.networks.spec import REGISTRY, DepthNetSpec


class DepthNet(nn.Module):
    """A frozen depth network: normalized (N, 3, H, W) -> raw output (N, H, W) at input resolution."""

    def __init__(self, model: nn.Module, spec: DepthNetSpec, frozen: bool = True):
        super().__init__()
        self.model = model
        self.spec = spec
        self.frozen = frozen
        if spec.family == "zoedepth" and hasattr(model, "set_attn_implementation"):
            # the dynamo ONNX exporter needs eager attention for ZoeDepth (shared/notes/models-and-runtimes-here.md)
            model.set_attn_implementation("eager")
        if frozen:
            self.freeze()

    def freeze(self) -> "DepthNet":
        self.frozen = True
        self.model.eval()
        self.model.requires_grad_(False)
        return self

    def unfreeze(self) -> "DepthNet":
        """For the finetuning baseline only: train the network's own weights."""
        self.frozen = False
        self.model.requires_grad_(True)
        return self

    def train(self, mode: bool = True) -> "DepthNet":
        super().train(mode)
        if self.frozen:
            self.model.eval()  # a frozen network never leaves eval mode (no BatchNorm drift)
        return self

    @property
    def normalization(self) -> Normalization:
        return self.spec.normalization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        self.spec.check_input_size(h, w)
        out = self.model(pixel_values=x).predicted_depth
        if out.dim() == 4:
            out = out[:, 0]
        if tuple(out.shape[-2:]) != (h, w):
            out = F.interpolate(out[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return out


def _parse_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"{path} is not a readable JSON file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _read_json(source: str, filename: str, local_only: bool) -> dict[str, Any] | None:
    path = Path(source) / filename
    if path.is_file():
        return _parse_json(path)
    if Path(source).is_dir():
        return None
    from transformers.utils import cached_file  # lazy: never touch the hub at import time

    try:
        found = cached_file(source, filename, local_files_only=local_only,
                            _raise_exceptions_for_missing_entries=False)
    except OSError as exc:  # network down, unknown repo...
        raise ModelLoadError(f"cannot fetch {filename} of {source!r}: {exc}") from exc
    return _parse_json(Path(found)) if found else None


def spec_from_configs(name: str, source: str, config: dict[str, Any], preproc: dict[str, Any] | None) -> DepthNetSpec:
    """Infer a spec from a model's config.json and preprocessor_config.json."""
    family = config.get("model_type", "")
    preproc = preproc or {}
    if preproc.get("do_normalize", True) and "image_mean" in preproc:
        mean, std = tuple(preproc["image_mean"]), tuple(preproc["image_std"])
    elif preproc.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    else:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if family == "depth_anything" else (HALF, HALF)
    size = preproc.get("size", {})
    multiple = int(preproc.get("ensure_multiple_of", preproc.get("size_divisor", 1)) or 1)
    if "height" in size:
        hw = (int(size["height"]), int(size["width"]))
    else:
        side = int(config.get("image_size", size.get("shortest_edge", 384)))
        hw = (side, side)
    kind = config.get("bgprompt_output_kind")
    if kind is None:
        metric = family in ("zoedepth", "glpn", "depth_pro") or config.get("depth_estimation_type") == "metric"
        kind = "metric_depth" if metric else "relative_disparity"
    hybrid = family == "dpt" and bool(config.get("is_hybrid") or config.get("backbone_config"))
    square = family == "dpt" and not hybrid
    if family == "depth_anything":
        multiple = max(multiple, int(config.get("patch_size", 14)))
    hw = tuple(max(multiple, (s // multiple) * multiple) for s in hw)
    return DepthNetSpec(name, source, family, hw, multiple, fixed_size=hybrid or family == "depth_pro",
                        square=square, mean=mean, std=std, output_kind=kind)


def resolve_spec(name_or_path: str, local_only: bool = False) -> DepthNetSpec:
    """Registry name, local directory or hub id -> spec (reads only small JSON files)."""
    if name_or_path in REGISTRY:
        return REGISTRY[name_or_path]
    source = os.fspath(name_or_path)
    config = _read_json(source, "config.json", local_only)
    if config is None:
        where = "directory" if Path(source).is_dir() else "hub id"
        raise ModelLoadError(
            f"no depth model at {source!r}: expected a registry name ({', '.join(sorted(REGISTRY))}), a local "
            f"directory with config.json + model.safetensors, or a hub id (this {where} has no config.json)")
    if config.get("auto_map"):  # transformers would import (or ask whether to import) code shipped with the model
        raise ModelLoadError(
            f"{source!r} asks to run its own remote code (auto_map: {sorted(config['auto_map'])}); bgprompt never "
            f"runs code that comes with a model. Use a model whose architecture transformers ships, or remove "
            f"auto_map after reviewing the code yourself.")
    try:
        return spec_from_configs(Path(source).name if Path(source).is_dir() else source, source, config,
                                 _read_json(source, "preprocessor_config.json", local_only))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # e.g. image_mean: 0.5, size: "big"
        raise ModelLoadError(f"{source!r}: config.json / preprocessor_config.json do not describe a usable depth "
                             f"network ({type(exc).__name__}: {exc})") from exc


def load_depth_net(name_or_path: str, device: str | torch.device = "cpu", local_only: bool = False) -> DepthNet:
    """Load a frozen depth network by registry name, hub id or local directory.

    ``local_only=True`` (robots, tests) never touches the network: a missing model is a clear error.
    """
    spec = resolve_spec(name_or_path, local_only)
    from transformers import AutoModelForDepthEstimation

    local_dir = Path(spec.source)
    if spec.source and local_dir.is_dir() and not (local_dir / "config.json").is_file():
        raise ModelLoadError(f"model directory {local_dir} has no config.json")
    if spec.source and not local_dir.is_dir() and Path(spec.source).is_absolute():
        raise ModelLoadError(f"model files for {spec.name!r} are missing: expected a directory at {spec.source}")
    try:
        model = AutoModelForDepthEstimation.from_pretrained(spec.source, local_files_only=local_only,
                                                            trust_remote_code=False)
    except (OSError, ValueError, SafetensorError, RuntimeError) as exc:  # truncated or foreign weights too
        raise ModelLoadError(f"cannot load depth network {spec.name!r} from {spec.source!r}: "
                             f"{type(exc).__name__}: {exc}") from exc
    return DepthNet(model.to(device), spec)


def build_depth_net(config: Any, spec: DepthNetSpec) -> DepthNet:
    """A frozen network of the same architecture built from a transformers config (random weights)."""
    from transformers import AutoModelForDepthEstimation

    return DepthNet(AutoModelForDepthEstimation.from_config(config), spec)
