"""Build the inference runtime an EstimatorConfig describes: network, prompt and backend."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from .adapters import DepthNetSpec, ModelLoadError, load_depth_net
from .backends import OnnxRuntimeBackend, TorchBackend
from .checkpoint import load_prompt
from .model import PromptedDepth

log = logging.getLogger("bgprompt.runtime")
PACKAGE_PROMPTS = Path(__file__).resolve().parent / "prompts"
# prompts shipped with a model, by name: "1bg" is the default, "pnet" the mask-conditioned one
SHIPPED_PROMPTS = {"mini": {"1bg": PACKAGE_PROMPTS / "mini-1bg.safetensors",
                            "pnet": PACKAGE_PROMPTS / "mini-pnet.safetensors",
                            # 1-BG learned on tabletop views (objects on tables, re-centred by their masks)
                            "tabletop": PACKAGE_PROMPTS / "mini-tabletop-1bg.safetensors"}}


def resolve_prompt_path(prompt: str, spec: DepthNetSpec) -> Path | None:
    """'none' -> None; 'default' / '1bg' / 'pnet' / 'tabletop' -> the prompt shipped with ``spec``'s model;
    else a path."""
    if prompt == "none":
        return None
    if prompt in ("default", "1bg", "pnet", "tabletop"):
        kind = "1bg" if prompt == "default" else prompt
        path = SHIPPED_PROMPTS.get(spec.name, {}).get(kind)
        if path is None:
            raise ModelLoadError(f"no {kind} prompt ships with {spec.name!r}: give a prompt checkpoint, or 'none' "
                                 f"for the white-background baseline (write ./{prompt} for a file of that name)")
        if not path.is_file():
            raise ModelLoadError(f"the shipped {kind} prompt for {spec.name!r} is missing: expected {path}")
        return path
    return Path(prompt).expanduser()


def build_model(cfg) -> PromptedDepth:
    device = "cpu" if cfg.backend != "torch" else ("cuda" if cfg.device == "auto" and _cuda() else
                                                    ("cpu" if cfg.device == "auto" else cfg.device))
    net = load_depth_net(cfg.model, device, local_only=cfg.local_only)
    path = resolve_prompt_path(cfg.prompt, net.spec)
    if path is None:
        return PromptedDepth(net)
    prompt, meta = load_prompt(path, net.spec)
    return PromptedDepth(net, prompt.to(device).eval(), meta.composite, meta.depth_transform)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def onnx_for(model: PromptedDepth, cfg, size: int) -> Path:
    """The exported graph for this model+prompt, exported once into the cache (keyed by content)."""
    if cfg.onnx:
        path = Path(cfg.onnx).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"ONNX model not found: {path}")
        return path
    import torch

    h = hashlib.sha256(json.dumps({"spec": model.net.spec.to_dict(), "prompt": cfg.prompt,
                                   "size": size, "precision": cfg.precision}, sort_keys=True).encode())
    for t in list(model.net.state_dict().values())[:4] + (list(model.prompt.state_dict().values()) if model.prompt else []):
        h.update(t.detach().cpu().to(torch.float32).numpy().tobytes())
    path = Path(cfg.cache_dir).expanduser() / f"{model.net.spec.name}-{h.hexdigest()[:16]}.onnx"
    if not path.is_file():
        from .export import export_onnx

        log.info("exporting %s to %s (first use of this model and prompt)", model.net.spec.name, path)
        export_onnx(model, path, size, half=cfg.precision == "fp16")
    return path


def resolve_backend(name: str, cuda: bool | None = None, installed=None) -> str:
    """``auto`` -> tensorrt where a CUDA GPU and the tensorrt package exist, else onnxruntime when installed, else
    torch; any other name is returned as is. Decided without importing any of them."""
    if name != "auto":
        return name
    import importlib.util

    installed = installed or (lambda pkg: importlib.util.find_spec(pkg) is not None)
    cuda = _cuda() if cuda is None else cuda
    if cuda and installed("tensorrt"):
        return "tensorrt"
    return "onnxruntime" if installed("onnxruntime") else "torch"


def build_runtime(cfg):
    """(backend, spec, model) for an EstimatorConfig."""
    import dataclasses

    if cfg.backend == "auto":
        cfg = dataclasses.replace(cfg, backend=resolve_backend("auto"))
        log.info("backend auto -> %s", cfg.backend)
    model = build_model(cfg)
    spec = model.net.spec
    size = spec.input_size[0]
    if spec.input_size[0] != spec.input_size[1]:
        raise ModelLoadError(f"{spec.name}: non-square network inputs are not supported by the estimator yet")
    if cfg.backend == "torch":
        return TorchBackend(model, cfg.device, cfg.precision), spec, model
    onnx_path = onnx_for(model, cfg, size)
    if cfg.backend == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path), spec, model
    from .tensorrt_backend import TensorRTBackend, build_engine

    engine = build_engine(onnx_path, Path(cfg.cache_dir).expanduser(), cfg.precision, size)
    return TensorRTBackend(engine), spec, model
