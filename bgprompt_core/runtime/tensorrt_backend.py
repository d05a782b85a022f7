"""Native TensorRT engines for TensorRT 8.6 (JetPack 6.0), 10.x and 11, built from the exported graph and cached.

What differs between versions (``TensorRTFeatures``), from NVIDIA's sources (NVIDIA/TensorRT python/src and
include/NvInfer.h per release branch; test/data/tensorrt_onnx_rules.json records where):
- 8.x: the ONNX parser needs an explicit-batch network (``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``);
  from 10.0 every network is explicit-batch and the flag is deprecated; 11 has no such flag.
- ONNX opset: 8.6 reads up to 17, 10.x up to 20 (the export writes 17, see onnx_graph.DEFAULT_OPSET). The real
  parsers do not refuse a newer opset: they read it with their own semantics, so we refuse it here.
- fp16: an fp16 engine is built from a graph exported with ``--precision fp16`` (network in fp16, phi and
  Eq. 2 in fp32). 10.12+ deprecates BuilderFlag.FP16 and the per-layer precision API (``layer.precision`` and
  ``set_output_type`` warn there) in favour of strong typing, so from 10.12 the network is created
  STRONGLY_TYPED and keeps the graph's types. 11 is always strongly typed: its STRONGLY_TYPED flag is deprecated
  and ignored, BuilderFlag.FP16 / INT8 / OBEY_PRECISION_CONSTRAINTS and the layer precision API are gone, so
  no flag is set. Before 10.12 the network is weakly typed: ``BuilderFlag.FP16`` plus
  ``OBEY_PRECISION_CONSTRAINTS`` with every layer the graph types as float32 pinned to float32, so Eq. 2 and its
  epsilon never run in half precision.

The engine is cached as ``<name>.engine`` with a JSON key beside it (graph hash, profile shapes, precision,
TensorRT version, GPU name / compute capability / memory / SM count and the Jetson board model); a changed key
rebuilds it in place and logs which field changed. A timing cache per TensorRT version and GPU speeds rebuilds;
one TensorRT refuses (corrupt, another device) is dropped with a warning, never fatal. Device buffers and the
stream come from cuda-python (what NVIDIA's samples use), so the node needs neither torch nor pycuda; CUDA errors
are reported by name (``cudaGetErrorName``), a missing driver as such. Tensor names, modes, dtypes and the
output's shape are read from the engine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgprompt_core.atomic import atomic_write
from bgprompt_core.errors import TensorRTError
from bgprompt_core.settings import PRECISIONS
from bgprompt_core.runtime.cuda_runtime import cuda_run, cudart, gpu_identity
from bgprompt_core.runtime.graph_contract import INPUTS, OUTPUT, graph_opset, read_onnx_metadata

log = logging.getLogger("bgprompt.tensorrt")
MIN_VERSION = (8, 6)
ENGINE_FORMAT = 2  # bump when the key's meaning changes: every cached engine is rebuilt once



# --- versions ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorRTFeatures:
    version: tuple[int, int]
    explicit_batch_flag: bool  # 8.x: create_network needs EXPLICIT_BATCH (implicit batch is refused by the parser)
    strongly_typed: bool  # fp16 through the graph's own types (10.12+, 11) instead of BuilderFlag.FP16
    max_opset: int
    strongly_typed_flag: bool = False  # 10.12..10.x: ask for it; 11: always strongly typed, the flag is ignored


def parse_version(text: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", text)
    if not m:
        raise TensorRTError(f"cannot read the TensorRT version {text!r}")
    return int(m.group(1)), int(m.group(2))


def features(trt) -> TensorRTFeatures:
    version = parse_version(trt.__version__)
    if version < MIN_VERSION:
        raise TensorRTError(f"TensorRT {trt.__version__} is older than 8.6 (JetPack 6.0), the oldest supported")
    weak_fp16 = all(hasattr(trt.BuilderFlag, f) for f in ("FP16", "OBEY_PRECISION_CONSTRAINTS"))
    always = version[0] >= 11 or not weak_fp16  # 11: NvInfer.h "Strongly typed mode is always enabled"
    strongly = always or version >= (10, 12)
    flag = strongly and not always
    if flag and not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        raise TensorRTError(f"TensorRT {trt.__version__} has neither BuilderFlag.FP16 nor STRONGLY_TYPED networks")
    return TensorRTFeatures(version, version[0] < 10, strongly, 17 if version[0] < 10 else 20, flag)


def network_flags(trt, feat: TensorRTFeatures) -> int:
    """``create_network`` flags: explicit batch on 8.x, strongly typed on 10.12+ (11: none, always strongly typed)."""
    flags = 0
    if feat.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if feat.strongly_typed_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def pin_float32_layers(trt, network) -> int:
    """Weakly typed fp16 (8.6 .. 10.11): keep every layer whose outputs the graph types as float32 (phi, Eq. 2) in
    float32. Returns how many layers were pinned. Effective with ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if outputs and all(o.dtype == trt.float32 for o in outputs):
            if not hasattr(layer, "set_output_type"):
                raise TensorRTError(f"TensorRT {trt.__version__} has no per-layer precision: fp16 must come from a "
                                    f"strongly typed network")
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def profile_shapes(size: tuple[int, int], max_batch: int, opt_batch: int | None = None) -> dict[str, list[list[int]]]:
    """min / opt / max shapes per input: batch 1..max_batch (the estimator's max_objects), opt the usual 1-2."""
    if max_batch < 1:
        raise TensorRTError(f"max_batch must be >= 1, got {max_batch}")
    opt = min(max_batch, opt_batch or 2)
    h, w = size
    return {name: [[b, ch, h, w] for b in (1, opt, max_batch)] for name, ch in zip(INPUTS, (3, 1))}


# --- the cache --------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(onnx_path: Path, shapes: dict, precision: str, trt_version: str, gpu: dict) -> dict:
    return {"engine_format": ENGINE_FORMAT, "onnx_sha256": file_sha256(Path(onnx_path)), "shapes": shapes,
            "precision": precision, "tensorrt": trt_version, **gpu}


def rebuild_reason(meta_path: Path, key: dict) -> str | None:
    """None when a cached engine matches ``key``; else why it must be (re)built."""
    if not meta_path.is_file():
        return "no cached engine"
    try:
        old = json.loads(meta_path.read_text()).get("key", {})
    except (json.JSONDecodeError, AttributeError):
        return "cached engine metadata is corrupt"
    changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in key.items() if old.get(k) != v]
    return "cached engine was built for " + "; ".join(changed) if changed else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "gpu"


def build_engine(onnx_path: str | Path, cache_dir: str | Path, precision: str, size: tuple[int, int] | int,
                 max_batch: int = 16, name: str | None = None, opt_batch: int | None = None,
                 workspace_gb: float = 2.0, force: bool = False) -> tuple[Path, str | None]:
    """Build (or reuse) ``cache_dir/<name>.engine`` for the graph; returns (engine path, why it was built or None).

    Checks the graph (metadata, opset, precision) and that TensorRT is importable before anything slow.
    """
    import tensorrt as trt

    onnx_path, cache_dir = Path(onnx_path), Path(cache_dir)
    feat = features(trt)
    meta = _checked_graph(trt, feat, onnx_path, precision)
    size = (size, size) if isinstance(size, int) else tuple(size)
    shapes = profile_shapes(size, max_batch, opt_batch)
    gpu = gpu_identity()
    key = cache_key(onnx_path, shapes, precision, trt.__version__, gpu)
    engine_path = cache_dir / f"{_slug(name or onnx_path.stem)}.engine"
    meta_path = engine_path.with_suffix(".json")
    reason = "forced rebuild" if force else rebuild_reason(meta_path, key)
    if reason is None and not engine_path.is_file():
        reason = "engine file missing"
    if reason is None:
        log.info("reusing TensorRT engine %s", engine_path)
        return engine_path, None
    log.warning("building TensorRT engine %s (%s); this can take minutes on a Jetson", engine_path.name, reason)
    timing_path = cache_dir / f"timing-trt{trt.__version__}-{_slug(gpu['gpu'])}-{_slug(gpu['board'])}.cache"
    serialized, config = _serialize(trt, feat, onnx_path, precision, shapes, workspace_gb, timing_path)
    atomic_write(engine_path, lambda tmp: Path(tmp).write_bytes(bytes(serialized)))
    atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(
        {"key": key, "graph": meta, "onnx": str(onnx_path)}, indent=2, sort_keys=True)))
    save_timing_cache(config, timing_path)
    return engine_path, reason


def _checked_graph(trt, feat: TensorRTFeatures, onnx_path: Path, precision: str) -> dict:
    """The graph's bgprompt metadata, once its opset and precision fit this TensorRT and ``precision``."""
    meta = read_onnx_metadata(onnx_path)
    opset = graph_opset(onnx_path)
    if opset > feat.max_opset:
        raise TensorRTError(f"{onnx_path} is ONNX opset {opset}; TensorRT {trt.__version__} reads up to "
                            f"{feat.max_opset}: re-export with `bgprompt export --opset {feat.max_opset}`")
    if precision not in PRECISIONS:
        raise TensorRTError(f"precision must be fp32 or fp16, got {precision!r}")
    if meta.get("precision", "fp32") != precision:
        raise TensorRTError(f"an {precision} engine needs a graph exported with --precision {precision}; "
                            f"{onnx_path} is {meta.get('precision')}")
    return meta


def _serialize(trt, feat: TensorRTFeatures, onnx_path: Path, precision: str, shapes: dict, workspace_gb: float,
               timing_path: Path):
    """Parse the graph and build the serialized engine: (serialized engine, the builder config)."""
    logger = trt.Logger(trt.Logger.WARNING)
    init_plugins(trt, logger)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, feat))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the file: graphs with external weights (> 2 GB) too
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT {trt.__version__} could not parse {onnx_path}: {errors}")
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    if names != set(INPUTS):
        raise TensorRTError(f"{onnx_path} has inputs {sorted(names)}, expected {list(INPUTS)} (use `bgprompt export`)")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16" and not feat.strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        log.info("weakly typed fp16: %d float32 layers pinned", pin_float32_layers(trt, network))
    profile = builder.create_optimization_profile()
    for tensor, (lo, opt, hi) in shapes.items():
        profile.set_shape(tensor, lo, opt, hi)
    config.add_optimization_profile(profile)
    attach_timing_cache(config, timing_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    return serialized, config


def init_plugins(trt, logger) -> None:
    """Register TensorRT's standard plugins (as NVIDIA's samples do) so graphs and engines that use them load."""
    init = getattr(trt, "init_libnvinfer_plugins", None)
    if init is not None and not init(logger, ""):
        log.warning("TensorRT's standard plugins could not be registered (init_libnvinfer_plugins returned False)")


def attach_timing_cache(config, path: Path) -> bool:
    """Give the build the timing cache at ``path`` (or a fresh one). A cache TensorRT refuses (corrupt, from
    another device or version) is dropped with a warning, and the build goes on with a fresh cache."""
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob) if blob else None
    if blob and cache is None:
        log.warning("timing cache %s is not readable by this TensorRT; starting a fresh one", path)
    if cache is not None and not config.set_timing_cache(cache, False):  # ignore_mismatch=False: same device only
        log.warning("TensorRT refused timing cache %s (another GPU or TensorRT?); starting a fresh one", path)
        cache = None
    if cache is None:
        fresh = config.create_timing_cache(b"")
        if fresh is None or not config.set_timing_cache(fresh, False):
            log.warning("TensorRT gave no timing cache; building without one")
            return False
    return True


def save_timing_cache(config, path: Path) -> None:
    """Keep the build's timing cache for the next build; nothing is written when the build had none."""
    cache = config.get_timing_cache()
    if cache is None:
        log.warning("no timing cache to save after the build (none was attached)")
        return
    data = bytes(cache.serialize())
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


# --- running ----------------------------------------------------------------------------------------------
class TensorRTBackend:
    """Runs a cached engine: one stream and one set of device buffers (sized for the profile's max batch) for
    the process, never allocated per frame."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path):
        import tensorrt as trt

        self.trt, self.rt = trt, cudart()
        self.logger = trt.Logger(trt.Logger.WARNING)
        init_plugins(trt, self.logger)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise TensorRTError(f"{engine_path}: not an engine for this TensorRT / GPU; delete it to rebuild")
        self.inputs, self.outputs, self.dtypes = [], [], {}
        for i in range(self.engine.num_io_tensors):
            tensor = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(tensor)
            self.dtypes[tensor] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(tensor)))
        if sorted(self.inputs) != sorted(INPUTS) or self.outputs != [OUTPUT]:
            raise TensorRTError(f"{engine_path}: engine tensors in {self.inputs} out {self.outputs}; a bgprompt engine "
                                f"has inputs {list(INPUTS)} and output {OUTPUT!r}")
        self.profile = {t: [tuple(s) for s in self.engine.get_tensor_profile_shape(t, 0)] for t in self.inputs}
        self.max_batch = min(p[2][0] for p in self.profile.values())
        self.context = self.engine.create_execution_context()
        self.stream = cuda_run(self.rt, "cudaStreamCreate")
        sizes = {t: self.profile[t][2] for t in self.inputs}
        for t, shape in sizes.items():  # the largest input shapes give the largest output: size its buffer by them
            if not self.context.set_input_shape(t, shape):
                raise TensorRTError(f"{engine_path}: the engine refuses its own profile's max shape {shape} for {t!r}")
        sizes[OUTPUT] = tuple(int(d) for d in self.context.get_tensor_shape(OUTPUT))
        if len(sizes[OUTPUT]) != 3 or min(sizes[OUTPUT]) < 1 or sizes[OUTPUT][0] != self.max_batch:
            raise TensorRTError(f"{engine_path}: output {OUTPUT!r} has shape {sizes[OUTPUT]} for inputs "
                                f"{sizes[INPUTS[0]]}; a bgprompt engine gives (N, H, W) depth")
        self.output_size = sizes[OUTPUT][1:]
        self.nbytes = {t: int(np.prod(shape)) * self.dtypes[t].itemsize for t, shape in sizes.items()}
        self.device = {}
        for t in sizes:
            self.device[t] = cuda_run(self.rt, "cudaMalloc", self.nbytes[t])
            if not self.context.set_tensor_address(t, int(self.device[t])):
                raise TensorRTError(f"TensorRT refused the device buffer of {t!r} (set_tensor_address returned "
                                    f"False; see its log)")

    def _copy(self, dst: int, src: int, nbytes: int, kind) -> None:
        cuda_run(self.rt, "cudaMemcpyAsync", dst, src, nbytes, kind, self.stream)

    def run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n = image.shape[0]
        if n > self.max_batch:
            raise TensorRTError(f"{n} objects in one frame; the engine's profile allows 1..{self.max_batch}: lower "
                                f"max_objects or rebuild the engine with max_objects >= {n}")
        kinds = self.rt.cudaMemcpyKind
        host = {}
        for tensor, arr in zip(INPUTS, (image, mask)):
            host[tensor] = np.ascontiguousarray(arr, self.dtypes[tensor])
            if not self.context.set_input_shape(tensor, host[tensor].shape):
                raise TensorRTError(f"TensorRT refused shape {host[tensor].shape} for {tensor!r}; the engine's "
                                    f"profile is {self.profile[tensor]} (min, opt, max)")
            self._copy(int(self.device[tensor]), host[tensor].ctypes.data, host[tensor].nbytes,
                       kinds.cudaMemcpyHostToDevice)
        out = np.empty(tuple(self.context.get_tensor_shape(OUTPUT)), self.dtypes[OUTPUT])
        if out.nbytes > self.nbytes[OUTPUT]:  # never copy past the buffer the engine's max shape sized
            raise TensorRTError(f"engine output {out.shape} is larger than its buffer for {self.max_batch} objects")
        if not self.context.execute_async_v3(self.stream):
            raise TensorRTError("TensorRT execution failed (see its log)")
        self._copy(out.ctypes.data, int(self.device[OUTPUT]), out.nbytes, kinds.cudaMemcpyDeviceToHost)
        cuda_run(self.rt, "cudaStreamSynchronize", self.stream)  # host buffers stay referenced until here
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        for ptr in self.device.values():
            cuda_run(self.rt, "cudaFree", ptr)
        self.device = {}
        cuda_run(self.rt, "cudaStreamDestroy", self.stream)

    def __del__(self):  # buffers are process-lifetime; free them when the backend goes
        try:
            if getattr(self, "device", None):
                self.close()
        except Exception:
            pass
