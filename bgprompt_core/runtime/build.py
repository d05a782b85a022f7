"""Build the inference runtime an EstimatorConfig describes: network, prompt and backend.

Two routes:
- backend ``onnxruntime`` or ``tensorrt`` (``auto`` picks one when installed) on an exported graph: ``onnx`` if
  set, else the graph shipped in the package for (model, prompt) (``SHIPPED_GRAPHS``: mini with its 1-BG and
  tabletop 1-BG prompts). The graph carries the prompt, phi and Eq. 2, its metadata the network spec, so neither
  torch nor transformers is imported: the robot default;
- otherwise the network and prompt are loaded with torch (and, for onnxruntime / tensorrt, exported once into
  the cache): backend ``torch``, or a model / prompt with no graph given or shipped (a dev machine's step).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bgprompt_core.errors import ModelLoadError, StaleGraphError
from bgprompt_core.networks.spec import DepthNetSpec
from bgprompt_core.runtime.devices import torch_device
from bgprompt_core.settings import SHIPPED_PROMPT_NAMES

if TYPE_CHECKING:
    from bgprompt_core.method.model import PromptedDepth

log = logging.getLogger("bgprompt.runtime")
PACKAGE_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
# prompts shipped with a model, by name: "1bg" is the default, "pnet" the mask-conditioned one
SHIPPED_PROMPTS = {"mini": {"1bg": PACKAGE_PROMPTS / "mini-1bg.safetensors",
                            "pnet": PACKAGE_PROMPTS / "mini-pnet.safetensors",
                            # 1-BG learned on tabletop views (objects on tables, re-centred by their masks)
                            "tabletop": PACKAGE_PROMPTS / "mini-tabletop-1bg.safetensors"}}


PROMPT_HELP = ("prompt checkpoint path, or a prompt shipped with the model: '1bg' (its 1-BG), 'pnet' "
               "(its PNet), 'tabletop' (its 1-BG learned on tabletop views, for recenter: true); 'none' is the "
               "white-background baseline")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # bgprompt_core/
PACKAGE_GRAPHS = PACKAGE_ROOT / "graphs"
# Exported graphs shipped with a model's prompts (fp32, opset 17, batch 1..16), run without torch. PNet is not
# shipped: its graph is 17 MB (the U-Net), three times these; export it where torch runs. Each graph has a
# digest file beside it (``<graph>.sha256``, sha256sum's format, paths relative to bgprompt_core/) naming the
# graph and the weights it was exported from, so a retrained prompt or network never runs through a stale
# graph. Regenerate both with `make graphs` (`bgprompt export`, needs torch).
SHIPPED_GRAPHS = {"mini": {"1bg": PACKAGE_GRAPHS / "mini-1bg.onnx",
                           "tabletop": PACKAGE_GRAPHS / "mini-tabletop.onnx"}}



def check_shipped_graph(graph: Path) -> None:
    """Raise StaleGraphError unless ``graph`` and every file its digest file names (the network's weights and
    config, the prompt) have the recorded SHA-256."""
    from bgprompt_core.runtime.tensorrt_backend import file_sha256  # stdlib + numpy: no tensorrt imported

    digests = graph.with_name(graph.name + ".sha256")
    if not digests.is_file():
        raise StaleGraphError(f"{digests} is missing: regenerate the shipped graphs with `make graphs`")
    for line in digests.read_text().splitlines():
        if not line.strip():
            continue
        want, rel = line.split(maxsplit=1)
        path = PACKAGE_ROOT / rel.lstrip("*")
        got = file_sha256(path) if path.is_file() else "missing"
        if got != want:
            raise StaleGraphError(f"the shipped graph {graph.name} is stale: {rel} is {got[:12]}, the graph was "
                                  f"exported from {want[:12]}; regenerate it with `make graphs` (needs torch), or "
                                  f"use backend torch")


def shipped_graph(cfg) -> Path | None:
    """The graph shipped for ``cfg``'s registry model and shipped prompt name at fp32, else None. A stale one
    raises StaleGraphError (build_runtime then exports from the weights where torch is installed)."""
    kind = "1bg" if cfg.prompt == "default" else cfg.prompt
    path = SHIPPED_GRAPHS.get(cfg.model, {}).get(kind)
    if path is None or cfg.precision != "fp32":
        return None
    check_shipped_graph(path)
    return path


def resolve_prompt_path(prompt: str, spec: DepthNetSpec) -> Path | None:
    """'none' -> None; '1bg' (deprecated alias 'default') / 'pnet' / 'tabletop' -> the prompt shipped with ``spec``'s model;
    else a path."""
    if prompt == "none":
        return None
    if prompt in SHIPPED_PROMPT_NAMES:
        if prompt == "default":
            log.warning("prompt 'default' is deprecated: use '1bg' (the same shipped 1-BG prompt)")
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
    from bgprompt_core.networks.loading import load_depth_net
    from bgprompt_core.method.checkpoint import load_prompt
    from bgprompt_core.method.model import PromptedDepth

    device = torch_device(cfg.device) if cfg.backend == "torch" else "cpu"  # a graph is exported on the CPU
    net = load_depth_net(cfg.model, device, local_only=cfg.local_only)
    path = resolve_prompt_path(cfg.prompt, net.spec)
    if path is None:
        return PromptedDepth(net)
    prompt, meta = load_prompt(path, net.spec)
    return PromptedDepth(net, prompt.to(device).eval(), meta.composite, meta.depth_transform)


def _installed(pkg: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(pkg) is not None


def gpu_present() -> bool:
    """A CUDA GPU is usable: asked through cuda-python (what the TensorRT backend uses), never by importing torch."""
    if not _installed("cuda"):
        return False
    from bgprompt_core.runtime.cuda_runtime import cuda_device_count

    try:
        return cuda_device_count() > 0
    except Exception:  # driver missing or broken: no GPU for us
        return False


def onnx_for(model: PromptedDepth, cfg, size: int) -> Path:
    """The exported graph for this model+prompt, exported once into the cache (keyed by content); a graph given
    as ``cfg.onnx`` never reaches here (build_runtime runs it without torch)."""
    import torch

    from bgprompt_core.runtime.graph_contract import DEFAULT_OPSET

    h = hashlib.sha256(json.dumps({"spec": model.net.spec.to_dict(), "prompt": cfg.prompt, "opset": DEFAULT_OPSET,
                                   "size": size, "precision": cfg.precision, "max_batch": cfg.max_objects,
                                   "composite": model.mode, "transform": model.transform.to_dict()},
                                  sort_keys=True).encode())
    states = [("net", model.net.state_dict())] + ([("prompt", model.prompt.state_dict())] if model.prompt else [])
    for scope, state in states:  # every weight: a tensor changed anywhere in a model dir gives a new graph
        for name, t in state.items():
            h.update(f"{scope}.{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    path = Path(cfg.cache_dir).expanduser() / f"{model.net.spec.name}-{h.hexdigest()[:16]}.onnx"
    if not path.is_file():
        from bgprompt_core.runtime.export import export_onnx

        log.info("exporting %s to %s (first use of this model and prompt)", model.net.spec.name, path)
        export_onnx(model, path, size, max_batch=cfg.max_objects, half=cfg.precision == "fp16")
    return path


def resolve_backend(name: str, cuda: bool | None = None, installed=None) -> str:
    """``auto`` -> tensorrt where a CUDA GPU and the tensorrt package exist, else onnxruntime when installed, else
    torch; any other name is returned as is. Decided without importing any of them."""
    if name != "auto":
        return name
    installed = installed or _installed
    cuda = gpu_present() if cuda is None else cuda
    if cuda and installed("tensorrt") and installed("cuda"):  # cuda: cuda-python, for the engine's buffers
        return "tensorrt"
    return "onnxruntime" if installed("onnxruntime") else "torch"


def check_tensorrt_available(installed=None) -> None:
    """Fail before any export when the tensorrt backend cannot run here (the packages are looked up, not imported)."""
    installed = installed or _installed
    missing = [pip for pkg, pip in (("tensorrt", "tensorrt"), ("cuda", "cuda-python")) if not installed(pkg)]
    if missing:
        raise ModelLoadError(f"backend 'tensorrt' needs {' and '.join(missing)} (on a Jetson they come with JetPack; "
                             f"see docs/DEPLOYMENT.md), or use backend 'onnxruntime' / 'auto'")


def engine_name(cfg, spec: DepthNetSpec) -> str:
    """One engine file per (network, prompt, precision): a changed graph rebuilds it in place with the reason
    logged, instead of piling up engines under hashed names."""
    prompt = Path(cfg.onnx).stem if cfg.onnx else (Path(cfg.prompt).stem if cfg.prompt not in SHIPPED_PROMPT_NAMES
                                                   else cfg.prompt)
    label = f"{spec.name}-{prompt}-{cfg.precision}" if not cfg.onnx else f"{prompt}-{cfg.precision}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)


def graph_runtime(cfg, onnx_path: Path, spec: DepthNetSpec | None = None):
    """(backend, spec) for an exported graph, with neither torch nor transformers imported."""
    from bgprompt_core.runtime.graph_contract import GraphError, read_onnx_metadata

    if cfg.backend == "onnxruntime":
        from bgprompt_core.runtime.onnxruntime_backend import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(onnx_path)
        meta = backend.metadata
    else:
        meta = read_onnx_metadata(onnx_path)
    try:
        graph_spec = DepthNetSpec.from_dict(meta["network"])
    except (KeyError, TypeError, ValueError) as exc:
        raise GraphError(f"{onnx_path}: invalid network spec in the graph's metadata ({type(exc).__name__}: {exc}); "
                         f"re-export with `bgprompt export`") from exc
    if meta.get("precision", "fp32") != cfg.precision:
        raise ModelLoadError(f"{onnx_path} was exported in {meta.get('precision')}, the config asks for "
                             f"{cfg.precision}: re-export with `bgprompt export --precision {cfg.precision}`")
    if cfg.backend == "tensorrt":
        from bgprompt_core.runtime.tensorrt_backend import TensorRTBackend, build_engine

        engine, reason = build_engine(onnx_path, Path(cfg.cache_dir).expanduser(), cfg.precision,
                                      tuple(meta["input_size"]), max_batch=cfg.max_objects,
                                      name=engine_name(cfg, spec or graph_spec))
        backend = TensorRTBackend(engine)
    log.info("%s runs %s (prompt %s, %s) from %s", cfg.backend, graph_spec.name,
             (meta.get("prompt") or {}).get("type", "none"), meta.get("precision"), onnx_path)
    return backend, graph_spec


def _graph_for(cfg) -> Path | None:
    """The exported graph a graph backend runs: ``cfg.onnx``, else the shipped one (None: export with torch)."""
    if cfg.onnx:
        path = Path(cfg.onnx).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"ONNX model not found: {path} (create it with `bgprompt export`)")
        if cfg.prompt not in ("default", "1bg"):
            log.warning("prompt %r is ignored: the exported graph %s carries its own prompt", cfg.prompt, path)
        return path
    try:
        return shipped_graph(cfg)
    except StaleGraphError as exc:
        if not _installed("torch"):
            raise
        log.error("%s; exporting from the shipped weights instead", exc)
        return None


def build_runtime(cfg):
    """(backend, spec, model) for an EstimatorConfig; ``model`` (torch) is None when a graph backend runs an
    exported graph (given as ``onnx``, or shipped for the model and prompt): that route imports neither torch
    nor transformers."""
    requested = cfg.backend
    if cfg.backend == "auto":
        cfg = dataclasses.replace(cfg, backend=resolve_backend("auto"))
        log.info("backend auto -> %s", cfg.backend)
    if cfg.backend == "tensorrt":
        check_tensorrt_available()
    graph = _graph_for(cfg) if cfg.backend != "torch" else None
    if graph is not None:
        backend, spec = graph_runtime(cfg, graph)
        return backend, spec, None
    if not _installed("torch"):
        if requested == "auto" and cfg.backend == "torch":  # onnxruntime is missing too
            raise ModelLoadError(f"neither onnxruntime nor torch can be imported by {sys.executable}: install the "
                                 f"robot extra (pip install '.[robot]'), or on apt ROS activate the venv that holds "
                                 f"onnxruntime before ros2 run / launch (docs/DEPLOYMENT.md)")
        if cfg.backend == "torch":
            raise ModelLoadError("backend torch needs torch (pip install '.[core]'); without it, run an exported "
                                 "graph: install onnxruntime (pip install '.[robot]') and use backend auto")
        shipped = sorted((m, p) for m, g in SHIPPED_GRAPHS.items() for p in g)
        raise ModelLoadError(f"no exported graph for model {cfg.model!r} with prompt {cfg.prompt!r} at {cfg.precision} "
                             f"(graphs ship for {shipped} at fp32), and torch is not installed to load and export "
                             f"it: export it where torch runs (`bgprompt export --model {cfg.model} --prompt "
                             f"{cfg.prompt} --precision {cfg.precision} --out graph.onnx`) and set onnx to that file")
    model = build_model(cfg)
    spec = model.net.spec
    size = spec.input_size[0]
    if spec.input_size[0] != spec.input_size[1]:
        raise ModelLoadError(f"{spec.name}: non-square network inputs are not supported by the estimator yet")
    if cfg.backend == "torch":
        from bgprompt_core.runtime.torch_backend import TorchBackend

        return TorchBackend(model, cfg.device, cfg.precision), spec, model
    backend, _ = graph_runtime(cfg, onnx_for(model, cfg, size), spec)
    return backend, spec, model
