"""Native TensorRT engines (TensorRT 10 / 11 Python API), built from the exported ONNX and cached.

- Built once; cached under a key of ONNX hash + input shapes + precision + TensorRT version + GPU name and
  compute capability, written atomically, and rebuilt (with a log line saying why) when the key changes;
  an engine is never reused on another GPU or TensorRT version.
- Dynamic batch (1..max_batch) through an optimization profile; named tensors, ``set_tensor_address`` and
  ``execute_async_v3`` (``execute_async_v2`` is gone in TensorRT 10).
- Precision: fp16 uses ``BuilderFlag.FP16`` where it exists; TensorRT 11 removed it in favour of strongly
  typed networks, so there an fp16 engine needs an fp16-typed ONNX (``bgprompt export --precision fp16``),
  which is parsed into a STRONGLY_TYPED network.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from .atomic import atomic_write

log = logging.getLogger("bgprompt.tensorrt")


def gpu_identity() -> dict:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT needs a CUDA GPU; none is available")
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def cache_key(onnx_path: Path, shapes: dict, precision: str, trt_version: str, gpu: dict) -> dict:
    digest = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()
    return {"onnx_sha256": digest, "shapes": shapes, "precision": precision, "tensorrt": trt_version, **gpu}


def key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def rebuild_reason(meta_path: Path, key: dict) -> str | None:
    """None when a cached engine matches ``key``; else why it must be (re)built."""
    if not meta_path.is_file():
        return "no cached engine"
    try:
        old = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return "cached engine metadata is corrupt"
    changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in key.items() if old.get(k) != v]
    return "cached engine was built for " + "; ".join(changed) if changed else None


def build_engine(onnx_path: Path, cache_dir: Path, precision: str, size: int, max_batch: int = 8,
                 workspace_gb: float = 2.0, force: bool = False) -> Path:
    import tensorrt as trt

    shapes = {"min": [1, 3, size, size], "opt": [max(1, max_batch // 2), 3, size, size],
              "max": [max_batch, 3, size, size]}
    key = cache_key(onnx_path, shapes, precision, trt.__version__, gpu_identity())
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine_path = cache_dir / f"{Path(onnx_path).stem}-{key_id(key)}.engine"
    meta_path = engine_path.with_suffix(".json")
    reason = "forced rebuild" if force else rebuild_reason(meta_path, key)
    if reason is None and engine_path.is_file():
        log.info("reusing TensorRT engine %s", engine_path)
        return engine_path
    log.warning("building TensorRT engine %s (%s); this can take minutes on a Jetson", engine_path.name,
                reason or "engine file missing")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    flags = 0
    if precision == "fp16" and not has_fp16_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16" and has_fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, ch in (("image", 3), ("mask", 1)):
        profile.set_shape(name, *[(s[0], ch, s[2], s[3]) for s in (shapes["min"], shapes["opt"], shapes["max"])])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    atomic_write(engine_path, lambda tmp: Path(tmp).write_bytes(bytes(serialized)))
    atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(key, indent=2, sort_keys=True)))
    return engine_path


class TensorRTBackend:
    """Runs a cached engine; one CUDA context and one stream for the process (never per frame)."""

    name = "tensorrt"

    def __init__(self, engine_path: Path):
        import tensorrt as trt
        import torch

        self.torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_path}: not an engine for this TensorRT / GPU; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    def run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.cuda.stream(self.stream):
            img = torch.from_numpy(np.ascontiguousarray(image, np.float32)).cuda(non_blocking=True)
            msk = torch.from_numpy(np.ascontiguousarray(mask, np.float32)).cuda(non_blocking=True)
            self.context.set_input_shape("image", tuple(img.shape))
            self.context.set_input_shape("mask", tuple(msk.shape))
            out = torch.empty(tuple(self.context.get_tensor_shape("depth")), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address("image", img.data_ptr())
            self.context.set_tensor_address("mask", msk.data_ptr())
            self.context.set_tensor_address("depth", out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            self.stream.synchronize()
        return out.cpu().numpy()
