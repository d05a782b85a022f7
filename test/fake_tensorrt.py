"""Fake ``tensorrt`` and cuda-python runtime modules, one per TensorRT version, for tests without a GPU.

What differs per version is taken from NVIDIA's TensorRT Python API reference and onnx-tensorrt
(docs/operators.md of each release branch; the operator lists are in data/tensorrt_onnx_ops.json):

- 8.6 (JetPack 6.0): ``NetworkDefinitionCreationFlag`` has EXPLICIT_BATCH / EXPLICIT_PRECISION and no
  STRONGLY_TYPED; the ONNX parser refuses a network created without EXPLICIT_BATCH; opsets up to 17.
- 10.x: every network is explicit-batch (the flag is accepted, deprecated); STRONGLY_TYPED exists; opsets up to 20.
- 10.12+: as 10.x; weakly typed networks (BuilderFlag.FP16) are deprecated: using FP16 logs a warning.
- 11: no EXPLICIT_BATCH, no BuilderFlag.FP16 / OBEY_PRECISION_CONSTRAINTS.
- all: the parser refuses operators outside the version's list and opsets above its maximum; the builder
  refuses BuilderFlag.FP16 on a strongly typed network and a profile missing for a dynamic input.

The "engine" is the ONNX graph plus its profile; ``execute_async_v3`` runs it with onnxruntime on the fake
device memory (host memory from ctypes), so a backend's result can be compared with onnxruntime's.
"""
from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np

OPS = json.loads((Path(__file__).parent / "data" / "tensorrt_onnx_ops.json").read_text())
VERSIONS = ("8.6.1", "10.3.0", "10.13.0", "11.0.0")


def _enum(name: str, members: list[str]) -> type:
    return enum.IntEnum(name, {m: i for i, m in enumerate(members)})


def make_tensorrt(version: str) -> types.ModuleType:
    major, minor = (int(x) for x in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = []  # every build_serialized_network call: (network flags, builder flags, profiles, pinned)
    trt.log = []
    ops = OPS["8.6" if major < 10 else "10"]
    max_opset = ops["max_opset"]
    supported = set(ops["supported"])

    flags = ["EXPLICIT_BATCH", "EXPLICIT_PRECISION"] if major < 10 else (
        ["EXPLICIT_BATCH", "STRONGLY_TYPED"] if major == 10 else ["STRONGLY_TYPED"])
    trt.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", flags)
    bflags = ["TF32", "INT8", "REFIT", "OBEY_PRECISION_CONSTRAINTS", "FP16"] if major < 11 else ["TF32", "INT8", "REFIT"]
    trt.BuilderFlag = _enum("BuilderFlag", bflags)
    trt.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE"])
    trt.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    dtypes = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"] + (["INT64", "BF16"] if major >= 10 else [])
    trt.DataType = _enum("DataType", dtypes)
    trt.float32, trt.float16, trt.int32, trt.bool = (trt.DataType.FLOAT, trt.DataType.HALF, trt.DataType.INT32,
                                                     trt.DataType.BOOL)
    np_of = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT32: np.int32,
             trt.DataType.BOOL: np.bool_, trt.DataType.INT8: np.int8, trt.DataType.UINT8: np.uint8}
    if major >= 10:
        np_of[trt.DataType.INT64] = np.int64
    trt.nptype = lambda dt: np_of[dt]

    def from_onnx(elem: int):
        import onnx

        table = {onnx.TensorProto.FLOAT: trt.DataType.FLOAT, onnx.TensorProto.FLOAT16: trt.DataType.HALF,
                 onnx.TensorProto.INT32: trt.DataType.INT32, onnx.TensorProto.BOOL: trt.DataType.BOOL,
                 onnx.TensorProto.UINT8: trt.DataType.UINT8, onnx.TensorProto.INT8: trt.DataType.INT8,
                 onnx.TensorProto.INT64: trt.DataType.INT64 if major >= 10 else trt.DataType.INT32}
        return table[elem]

    class Logger:
        WARNING, INFO, ERROR, VERBOSE = 2, 3, 1, 4

        def __init__(self, severity=2):
            self.severity = severity

    class Tensor:
        def __init__(self, name, dtype, shape=()):
            self.name, self.dtype, self.shape = name, dtype, shape

    class Layer:
        def __init__(self, name, op, outputs):
            self.name, self.type, self._outputs = name, op, outputs
            self.precision, self.output_types = None, {}

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_output(self, i):
            return self._outputs[i]

        def set_output_type(self, i, dtype):
            self.output_types[i] = dtype

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.inputs, self.outputs, self.layers, self.onnx = [], [], [], None

        def has_flag(self, name):
            member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
            return member is not None and bool(self.flags & (1 << int(member)))

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))
        num_outputs = property(lambda self: len(self.outputs))
        get_input = lambda self, i: self.inputs[i]  # noqa: E731
        get_layer = lambda self, i: self.layers[i]  # noqa: E731
        get_output = lambda self, i: self.outputs[i]  # noqa: E731

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i):
            return self.errors[i]

        def parse(self, data: bytes) -> bool:
            import onnx

            return self._parse(onnx.load_from_string(data))

        def parse_from_file(self, path: str) -> bool:
            import onnx

            return self._parse(onnx.load(path))

        def _parse(self, model) -> bool:
            import onnx

            net = self.network
            if major < 10 and not net.has_flag("EXPLICIT_BATCH"):
                self.errors.append("ModelImporter.cpp: the ONNX parser only supports networks with an explicit "
                                   "batch dimension (create the network with EXPLICIT_BATCH)")
                return False
            opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
            if opset > max_opset:
                self.errors.append(f"unsupported opset {opset} (this TensorRT supports up to {max_opset})")
                return False
            bad = sorted({n.op_type for n in model.graph.node} - supported)
            if bad:
                self.errors.append(f"No importer registered for op: {', '.join(bad)}")
                return False
            inferred = onnx.shape_inference.infer_shapes(model)
            types_ = {v.name: v.type.tensor_type.elem_type for v in
                      list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
            types_.update({i.name: i.data_type for i in inferred.graph.initializer})
            net.inputs = [Tensor(i.name, from_onnx(i.type.tensor_type.elem_type)) for i in model.graph.input]
            net.outputs = [Tensor(o.name, from_onnx(o.type.tensor_type.elem_type)) for o in model.graph.output]
            net.layers = [Layer(n.name, n.op_type, [Tensor(o, from_onnx(types_[o])) for o in n.output if o in types_])
                          for n in model.graph.node]
            net.onnx = model.SerializeToString()
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            lo, opt, hi = tuple(lo), tuple(opt), tuple(hi)
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise ValueError(f"profile for {name}: min <= opt <= max violated")
            self.shapes[name] = (lo, opt, hi)

    class TimingCache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self):
            return self.data or f"timing cache {version}".encode()

    class BuilderConfig:
        def __init__(self):
            self.flags, self.profiles, self.pools, self.timing = set(), [], {}, None

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def set_flag(self, flag):
            if major == 10 and minor >= 12 and flag == trt.BuilderFlag.FP16:
                trt.log.append("WARNING: BuilderFlag::kFP16 is deprecated: use strongly typed networks")
            self.flags.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes):
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache
            return True

        def get_timing_cache(self):
            return self.timing

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            known = sum(1 << int(m) for m in trt.NetworkDefinitionCreationFlag)
            if flags & ~known:
                raise TypeError(f"unknown network creation flags {flags:#x}")
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            strongly = network.has_flag("STRONGLY_TYPED")
            if strongly and hasattr(trt.BuilderFlag, "FP16") and trt.BuilderFlag.FP16 in config.flags:
                trt.log.append("ERROR: BuilderFlag::kFP16 is not allowed with a strongly typed network")
                return None
            if len(config.profiles) != 1 or {t.name for t in network.inputs} - set(config.profiles[0].shapes):
                trt.log.append("ERROR: every dynamic input needs a shape in the optimization profile")
                return None
            pinned = [(layer.name, layer.type) for layer in network.layers if layer.precision == trt.float32]
            trt.builds.append({"network_flags": network.flags, "flags": sorted(f.name for f in config.flags),
                               "profile": config.profiles[0].shapes, "pinned": pinned, "strongly_typed": strongly})
            header = {"version": version, "profile": {k: [list(s) for s in v] for k, v in
                                                      config.profiles[0].shapes.items()}}
            return json.dumps(header).encode() + b"\n" + network.onnx

    class Engine:
        def __init__(self, header, onnx_bytes):
            import onnx
            import onnxruntime as ort

            self.model = onnx.load_from_string(onnx_bytes)
            self.profile = {k: [tuple(s) for s in v] for k, v in header["profile"].items()}
            self.io = [(i.name, trt.TensorIOMode.INPUT, from_onnx(i.type.tensor_type.elem_type))
                       for i in self.model.graph.input]
            self.io += [(o.name, trt.TensorIOMode.OUTPUT, from_onnx(o.type.tensor_type.elem_type))
                        for o in self.model.graph.output]
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            # TensorRT knows every output dimension once the input shapes are set; here: run the smallest profile
            feeds = {name: np.zeros(shapes[0], trt.nptype(self.get_tensor_dtype(name)))
                     for name, shapes in self.profile.items()}
            self.output_dims = self.session.run(None, feeds)[0].shape[1:]

        num_io_tensors = property(lambda self: len(self.io))

        def get_tensor_name(self, i):
            return self.io[i][0]

        def _io(self, name):
            return next(t for t in self.io if t[0] == name)

        def get_tensor_mode(self, name):
            return self._io(name)[1]

        def get_tensor_dtype(self, name):
            return self._io(name)[2]

        def get_tensor_profile_shape(self, name, index):
            return self.profile[name]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.executions = engine, {}, {}, 0

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.profile[name]
            if len(shape) != len(lo) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return (next(iter(self.shapes.values()))[0], *self.engine.output_dims)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def _array(self, name, shape):
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            n = int(np.prod(shape)) * dtype.itemsize
            return np.frombuffer((ctypes.c_char * n).from_address(self.addresses[name]), dtype).reshape(shape)

        def execute_async_v3(self, stream_handle):
            feeds = {name: self._array(name, shape).copy() for name, shape in self.shapes.items()}
            (out,) = self.engine.session.run(None, feeds)
            name = self.engine.model.graph.output[0].name
            ctypes.memmove(self.addresses[name], np.ascontiguousarray(out).ctypes.data, out.nbytes)
            self.executions += 1
            return True

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes):
            head, _, body = bytes(data).partition(b"\n")
            try:
                header = json.loads(head)
            except json.JSONDecodeError:
                return None
            if header.get("version") != version:  # an engine from another TensorRT version is refused
                return None
            return Engine(header, body)

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


def make_cudart(gpu: str = "Orin", capability=(8, 7), memory_mb: int = 30592, sms: int = 16) -> types.ModuleType:
    """cuda-python's runtime API subset bgprompt uses; device memory is host memory (ctypes buffers)."""
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorMemoryAllocation": 2})
    rt.cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2})
    ok = rt.cudaError_t.cudaSuccess
    rt.buffers = {}
    rt.props = types.SimpleNamespace(name=gpu.encode(), major=capability[0], minor=capability[1],
                                     totalGlobalMem=memory_mb << 20, multiProcessorCount=sms)

    def malloc(n):
        buf = ctypes.create_string_buffer(int(n))
        rt.buffers[ctypes.addressof(buf)] = buf
        return ok, ctypes.addressof(buf)

    def copy(dst, src, n, kind, stream):
        ctypes.memmove(int(dst), int(src), int(n))
        return (ok,)

    rt.cudaGetDeviceCount = lambda: (ok, 1)
    rt.cudaGetDevice = lambda: (ok, 0)
    rt.cudaGetDeviceProperties = lambda dev: (ok, rt.props)
    rt.cudaStreamCreate = lambda: (ok, object())
    rt.cudaStreamSynchronize = lambda s: (ok,)
    rt.cudaStreamDestroy = lambda s: (ok,)
    rt.cudaMalloc = malloc

    def free(ptr):
        rt.buffers.pop(int(ptr))
        return (ok,)

    rt.cudaFree = free
    rt.cudaMemcpyAsync = copy
    return rt


def install(monkeypatch, version: str, **gpu) -> tuple[types.ModuleType, types.ModuleType]:
    """Put a fake tensorrt (``version``) and cuda-python in sys.modules for one test."""
    trt, rt = make_tensorrt(version), make_cudart(**gpu)
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime, cuda.bindings = rt, bindings
    for name, mod in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", rt)):
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec finds it
        monkeypatch.setitem(sys.modules, name, mod)
    return trt, rt
