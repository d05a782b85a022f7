"""Prompt checkpoints: safetensors tensors plus JSON metadata in the safetensors header.

One file holds everything needed to rebuild and validate a prompt: the prompt config, the network it
was learned through (name, source, family, normalization, input size, output kind), the Eq. 2 and
compositing settings, the training config and metrics. Nothing is ever unpickled, except by
``import_authors_prompt`` through ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bgprompt_core.atomic import atomic_write
from bgprompt_core.method.config import ConfigError, DepthTransformConfig, FourierPromptConfig, PromptConfig, prompt_config_from_dict
from bgprompt_core.networks.spec import DepthNetSpec
from bgprompt_core.errors import CheckpointError
from bgprompt_core.settings import COMPOSITES
from bgprompt_core.method.prompts import Prompt, StaticPrompt, build_prompt, fourier_scale

FORMAT = "bgprompt-prompt"
FORMAT_VERSION = 1
META_KEY = "bgprompt"



@dataclass
class PromptMeta:
    """Everything about a prompt except its tensors."""

    prompt: PromptConfig
    network: DepthNetSpec
    composite: str = "replace"
    depth_transform: DepthTransformConfig = field(default_factory=DepthTransformConfig)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def __post_init__(self) -> None:
        if self.composite not in COMPOSITES:
            raise ConfigError(f"composite must be 'replace' or 'additive', got {self.composite!r}")

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "format_version": FORMAT_VERSION, "prompt": self.prompt.to_dict(),
            "network": self.network.to_dict(), "composite": self.composite,
            "depth_transform": self.depth_transform.to_dict(), "training": self.training,
            "metrics": self.metrics, "created": self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(),
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, origin: str = "checkpoint") -> "PromptMeta":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{origin}: metadata is not valid JSON ({exc})") from exc
        except RecursionError as exc:  # e.g. 100000 nested lists: valid JSON, but no metadata of ours
            raise CheckpointError(f"{origin}: metadata nests too deeply to be a prompt checkpoint") from exc
        if not isinstance(d, dict):
            raise CheckpointError(f"{origin}: metadata must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise CheckpointError(f"{origin}: not a bgprompt prompt checkpoint (format={d.get('format')!r})")
        version = d.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(f"{origin}: format version {version!r} is newer than this bgprompt supports "
                                  f"({FORMAT_VERSION}); upgrade bgprompt")
        try:
            dt = dict(d.get("depth_transform", {}))
            dt.pop("type", None)
            return cls(prompt=prompt_config_from_dict(d["prompt"]), network=DepthNetSpec.from_dict(d["network"]),
                       composite=d.get("composite", "replace"), depth_transform=DepthTransformConfig(**dt),
                       training=d.get("training", {}), metrics=d.get("metrics", {}), created=d.get("created", ""))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{origin}: invalid metadata ({type(exc).__name__}: {exc})") from exc


def save_prompt(path: str | os.PathLike, prompt: Prompt, meta: PromptMeta) -> Path:
    """Write ``prompt`` and ``meta`` atomically (temp file + rename) as one .safetensors file."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in prompt.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: meta.to_json()}))


def read_meta(path: str | os.PathLike) -> PromptMeta:
    """Only the metadata of a checkpoint (cheap: reads the header; no tensor is loaded)."""
    return _open(path, tensors=False)[1]


def _open(path: str | os.PathLike, tensors: bool = True) -> tuple[dict[str, torch.Tensor], PromptMeta]:
    """(tensors, metadata) of a checkpoint; ``tensors=False``: the header only ({} for the tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"prompt checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            loaded = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError) as exc:
        hint = " (a .pth.tar from the authors? use `bgprompt import-prompt`)" if path.suffix in (".tar", ".pth") else ""
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}){hint}") from exc
    if META_KEY not in header:
        raise CheckpointError(f"{path}: safetensors file without bgprompt metadata; not a prompt checkpoint")
    return loaded, PromptMeta.from_json(header[META_KEY], str(path))


def check_network(meta: PromptMeta, network: DepthNetSpec, origin: str = "prompt") -> None:
    """Refuse a prompt learned through another network, or with another normalization or output kind."""
    trained = meta.network
    problems = []
    if trained.name != network.name or trained.family != network.family:
        problems.append(f"it was learned through {trained.name!r} ({trained.family}), not {network.name!r} "
                        f"({network.family}); a prompt is specific to the frozen network it was trained through")
    if not trained.normalization.matches(network.normalization):
        problems.append(f"input normalization differs (mean/std {trained.mean}/{trained.std} vs "
                        f"{network.mean}/{network.std})")
    if trained.output_kind != network.output_kind:
        problems.append(f"output kind differs ({trained.output_kind} vs {network.output_kind})")
    if problems:
        raise CheckpointError(f"{origin} does not fit network {network.name!r}: " + "; ".join(problems) +
                              f". Train a prompt for it (bgprompt train --model {network.name}) or use "
                              f"--model {trained.name}.")


def load_prompt(path: str | os.PathLike, network: DepthNetSpec | None = None,
                allow_network_mismatch: bool = False) -> tuple[Prompt, PromptMeta]:
    """Rebuild a prompt from a checkpoint, validating its tensors and (when given) the network."""
    tensors, meta = _open(path)
    if network is not None and not allow_network_mismatch:
        check_network(meta, network, f"prompt {path}")
    with torch.device("meta"):  # shapes only: a crafted config must not allocate before it is checked
        expected = build_prompt(meta.prompt).state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: file {tuple(tensors[k].shape)} vs config {tuple(v.shape)}"
             for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: tensors do not match the prompt config (missing {missing}, "
                              f"unexpected {unexpected}, shape mismatches {wrong})")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: tensors contain NaN or inf: {bad}")
    prompt = build_prompt(meta.prompt)
    prompt.load_state_dict(tensors)
    check_background(prompt, str(path))
    return prompt, meta


def check_background(prompt: Prompt, origin: str = "prompt") -> None:
    """Refuse a prompt whose background (Eq. 1's B) is not finite although its tensors are.

    Finite tensors can still overflow: a 1-BG spectrum of 3e38 gives ``scale * spectrum = inf`` and an all-NaN
    background; a PNet's U-Net can overflow the same way. The 1-BG background is computed once; PNet is probed
    with a centred box mask (and a grey image for ``input='image'``) at its own resolution.
    """
    h, w = prompt.resolution
    with torch.no_grad():
        if isinstance(prompt, StaticPrompt):
            bg, probe = prompt.image(), "its background"
        else:
            mask = torch.zeros(1, 1, h, w)
            mask[..., h // 4: h - h // 4, w // 4: w - w // 4] = 1
            bg, probe = prompt(mask, torch.full((1, 3, h, w), 0.5)), "its background for a centred box mask"
    bad = int((~torch.isfinite(bg)).sum())
    if bad:
        raise CheckpointError(f"{origin}: the prompt's tensors are finite but {probe} is not: {bad} of {bg.numel()} "
                              f"values are NaN or inf (overflowing parameters); retrain or re-export the prompt")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _strip_module(key: str) -> str:
    parts = [p for p in key.split(".") if p != "module"]
    return ".".join(parts)


def import_authors_prompt(path: str | os.PathLike, network: DepthNetSpec,
                          divisor: float = 0.2) -> tuple[Prompt, PromptMeta]:
    """Read a single-background prompt released by the paper's authors (``.pth.tar``).

    Loaded with ``torch.load(weights_only=True)``: files holding pickled objects are refused. The
    spectrum lives under ``optimized_distortion.spectrum_real_imag_t`` (with ``module.`` prefixes),
    shape (1, 3, H, W//2+1, 2); the fixed 1/f scale under ``.scale`` gives the decay. Width is taken
    as H when consistent with W//2+1 (the released prompts are square), else 2*(W//2).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"authors' checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError... all mean "refuse"
        raise CheckpointError(f"{path}: not a plain tensor checkpoint loadable with weights_only=True; "
                              f"refusing to unpickle arbitrary objects ({type(exc).__name__}: {exc})") from exc
    flat = {_strip_module(k): v for k, v in _flatten(raw).items() if isinstance(v, torch.Tensor)}
    spec_key = next((k for k in flat if k.endswith("optimized_distortion.spectrum_real_imag_t")), None)
    if spec_key is None:
        sample = sorted(flat)[:8]
        raise CheckpointError(f"{path}: no single-background prompt (optimized_distortion.spectrum_real_imag_t) "
                              f"found; only 1-BG checkpoints (single_background_fft_*) can be imported. "
                              f"Tensor keys seen: {sample}")
    spectrum = flat[spec_key].float()
    if spectrum.dim() == 4:
        spectrum = spectrum[None]
    if spectrum.dim() != 5 or spectrum.shape[:2] != (1, 3) or spectrum.shape[-1] != 2:
        raise CheckpointError(f"{path}: spectrum has shape {tuple(spectrum.shape)}, expected (1, 3, H, W//2+1, 2)")
    h, half = spectrum.shape[2], spectrum.shape[3]
    w = h if h // 2 + 1 == half else 2 * (half - 1)
    decay = 1.0
    scale_key = spec_key.replace("spectrum_real_imag_t", "scale")
    if scale_key in flat:
        scale = flat[scale_key].float().squeeze()
        if scale.shape != (h, half):
            raise CheckpointError(f"{path}: scale has shape {tuple(scale.shape)}, expected {(h, half)}")
        decay = math.log(float(scale[0, 0])) / math.log(max(h, w))
        if not torch.allclose(scale, fourier_scale(h, w, decay), rtol=1e-3):
            raise CheckpointError(f"{path}: the stored scale is not a 1/f^decay spectrum scale; cannot import")
    cfg = FourierPromptConfig(height=h, width=w, decay=round(decay, 6), divisor=divisor)
    prompt = build_prompt(cfg)
    if not torch.isfinite(spectrum).all():
        raise CheckpointError(f"{path}: the spectrum contains NaN or inf")
    prompt.load_state_dict({"spectrum": spectrum})
    check_background(prompt, str(path))
    meta = PromptMeta(prompt=cfg, network=network,
                      training={"imported_from": path.name, "origin": "Baradad et al. released prompt"})
    return prompt, meta
