"""Fake ``tensorrt`` (8.6, 10.3, 10.13, 11.0) and cuda-python (12.2 / 12.6 / 12.9) modules for tests without a GPU.

Everything a fake refuses or warns about is taken from the vendors' sources, recorded with branch, commit and
lines in data/tensorrt_onnx_rules.json (tools/tensorrt-rules regenerates it) and data/cuda_python_facts.json:

- the ONNX parser applies onnx_tensorrt_rules.py: the release's docs/operators.md (Supported and Restrictions
  columns) and its importer rules. A refusal is reported as the real one is: ``parse`` returns False and
  ``str(parser.get_error(0))`` is the real text ("In node 3 (importFallbackPluginImporter): UNSUPPORTED_NODE:
  Assertion failed: creator && "Plugin not found, ...""). What the parser imports differently (8.6: Shape
  start/end, Reduce axes inputs) the engine computes the same way. It does not refuse an opset (the real parser
  has no upper bound; ModelImporter.cpp ``addOpset``).
- the network holds ``trt.LayerType`` layers as the importers add them (constants and initializers become
  weights, a CONSTANT layer only where a weight feeds a tensor operand), their outputs typed as TensorRT types
  them (8.6: INT64 as INT32, operators.md's note);
- enums (``BuilderFlag``, ``NetworkDefinitionCreationFlag``, ``LayerType``) have each release's members and
  values (python/src/infer/pyCore.cpp, pyGraph.cpp, include/NvInfer.h): 11 has no EXPLICIT_BATCH, no FP16, INT8
  or OBEY_PRECISION_CONSTRAINTS, and its STRONGLY_TYPED (value 0) is deprecated and ignored;
- ``ILayer.precision`` / ``set_output_type``: present on 8.6 and 10.3, a DeprecationWarning on 10.13 (the
  bindings' ``utils::deprecateMember``: "Use Deprecated in TensorRT 10.12. Superseded by strong typing. instead."),
  absent on 11 (AttributeError);
- ``IOptimizationProfile.set_shape`` raises RuntimeError("Shape provided for min is inconsistent with other
  shapes."), a build with a dynamic input and no profile shape fails (NvInfer.h addOptimizationProfile);
- the timing cache: ``create_timing_cache`` returns None for a blob that is not a cache (Polygraphy's
  backend/trt/config.py handles that), ``set_timing_cache`` returns False for a cache of another device
  (pyCoreDoc.h), ``get_timing_cache`` returns None when none is set;
- cuda-python: 12.2 and 12.6.0 have only ``cuda.cudart`` and raise RuntimeError('Failed to dlopen
  libcuda.so.1') without a driver; 12.9 has ``cuda.bindings.runtime`` (``cuda.cudart`` with a FutureWarning)
  and returns cudaErrorInsufficientDriver (35); ``cudaGetErrorName`` returns (cudaSuccess, b"name").

Not modelled: a real build (tactics, fusions, precisions), and what only a real TensorRT knows (values, shapes
at build time). The "engine" is the graph as the parser imported it plus its profile; ``execute_async_v3`` runs it
with onnxruntime on the fake device memory (ctypes), and checks every bound buffer is large enough (a real
engine would overrun it silently). So tests compare an engine's result with torch, not with onnxruntime.
"""
from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np

import onnx_tensorrt_rules as rules

DATA = Path(__file__).parent / "data"
RULES = rules.RULES
CUDA_FACTS = json.loads((DATA / "cuda_python_facts.json").read_text())
VERSIONS = ("8.6.1", "10.3.0", "10.13.0", "11.0.0")
API_OF = {"8.6": "8.6", "10.3": "10.3", "10.13": "10.13", "11.0": "11.0"}

# What each importer adds to the network, by LayerType (onnx-tensorrt builtin_op_importers.cpp / onnxOpImporters.cpp:
# addConvolution -> CONVOLUTION, elementwiseHelper -> ELEMENTWISE, unaryHelper -> UNARY, reduceTensor -> REDUCE...).
IMPORTER_LAYERS = {
    "Conv": ["CONVOLUTION"], "ConvTranspose": ["DECONVOLUTION"], "MatMul": ["MATRIX_MULTIPLY"],
    "Gemm": ["MATRIX_MULTIPLY", "ELEMENTWISE"], "Relu": ["ACTIVATION"], "Sigmoid": ["ACTIVATION"],
    "Tanh": ["ACTIVATION"], "LeakyRelu": ["ACTIVATION"], "Elu": ["ACTIVATION"], "Softplus": ["ACTIVATION"],
    "Clip": ["ACTIVATION"], "HardSigmoid": ["ACTIVATION"], "Add": ["ELEMENTWISE"], "Sub": ["ELEMENTWISE"],
    "Mul": ["ELEMENTWISE"], "Div": ["ELEMENTWISE"], "Pow": ["ELEMENTWISE"], "Max": ["ELEMENTWISE"],
    "Min": ["ELEMENTWISE"], "Equal": ["ELEMENTWISE"], "Greater": ["ELEMENTWISE"], "Less": ["ELEMENTWISE"],
    "GreaterOrEqual": ["ELEMENTWISE"], "LessOrEqual": ["ELEMENTWISE"], "And": ["ELEMENTWISE"], "Or": ["ELEMENTWISE"],
    "Mod": ["ELEMENTWISE"], "Sqrt": ["UNARY"], "Exp": ["UNARY"], "Log": ["UNARY"], "Erf": ["UNARY"], "Abs": ["UNARY"],
    "Neg": ["UNARY"], "Floor": ["UNARY"], "Ceil": ["UNARY"], "Not": ["UNARY"], "Reciprocal": ["UNARY"],
    "Sin": ["UNARY"], "Cos": ["UNARY"], "Round": ["UNARY"], "Sign": ["UNARY"], "Reshape": ["SHUFFLE"],
    "Transpose": ["SHUFFLE"], "Flatten": ["SHUFFLE"], "Squeeze": ["SHUFFLE"], "Unsqueeze": ["SHUFFLE"],
    "Concat": ["CONCATENATION"], "Gather": ["GATHER"], "GatherElements": ["GATHER"], "Slice": ["SLICE"],
    "Expand": ["SLICE"], "Tile": ["SLICE"], "Pad": ["SLICE"], "Shape": ["SHAPE"], "Cast": ["CAST"],
    "Resize": ["RESIZE"], "ReduceMean": ["REDUCE"], "ReduceMin": ["REDUCE"], "ReduceMax": ["REDUCE"],
    "ReduceSum": ["REDUCE"], "ReduceProd": ["REDUCE"], "Softmax": ["SOFTMAX"], "MaxPool": ["POOLING"],
    "AveragePool": ["POOLING"], "GlobalAveragePool": ["REDUCE"], "LayerNormalization": ["NORMALIZATION"],
    "InstanceNormalization": ["NORMALIZATION"], "GroupNormalization": ["NORMALIZATION"],
    "BatchNormalization": ["SCALE"], "Where": ["SELECT"], "Identity": ["IDENTITY"], "Dropout": ["IDENTITY"],
    "ConstantOfShape": ["FILL"], "Range": ["FILL"], "Einsum": ["EINSUM"], "TopK": ["TOPK"], "ArgMax": ["TOPK"],
    "ScatterND": ["SCATTER"], "ScatterElements": ["SCATTER"], "NonZero": ["NON_ZERO"], "GridSample": ["GRID_SAMPLE"],
    "CumSum": ["LOOP_OUTPUT"], "Constant": [],
}
# inputs each importer reads as weights (values at import time), so no CONSTANT layer is added for them
WEIGHT_INPUTS = {"Conv": {1, 2}, "ConvTranspose": {1, 2}, "BatchNormalization": {1, 2, 3, 4},
                 "InstanceNormalization": {1, 2}, "Reshape": {1}, "Slice": {1, 2, 3, 4}, "Squeeze": {1},
                 "Unsqueeze": {1}, "Resize": {1, 2, 3}, "ReduceSum": {1}, "ReduceMean": {1}, "ReduceMin": {1},
                 "ReduceMax": {1}, "Pad": {1, 2, 3}, "Expand": {1}, "ConstantOfShape": {0}, "Tile": {1},
                 "Clip": {1, 2}, "CumSum": {1}, "TopK": {1}, "Range": {0, 1, 2}, "LayerNormalization": {1, 2}}
DEPRECATED_PRECISION = "Deprecated in TensorRT 10.12. Superseded by strong typing."


def _enum(name: str, members: dict[str, int] | list[str]) -> type:
    if isinstance(members, list):
        members = {m: i for i, m in enumerate(members)}
    return enum.IntEnum(name, members)


def make_tensorrt(version: str) -> types.ModuleType:
    major, minor = (int(x) for x in version.split(".")[:2])
    api = RULES["api"][API_OF.get(f"{major}.{minor}", "10.13" if major == 10 and minor >= 12 else
                                  "10.3" if major == 10 else "11.0" if major >= 11 else "8.6")]
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = []  # every successful build_serialized_network: (network flags, builder flags, profile, pinned)
    trt.log = []  # what the logger would print
    trt.plugins_initialized = []
    trt.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", api["NetworkDefinitionCreationFlag"])
    trt.BuilderFlag = _enum("BuilderFlag", api["BuilderFlag"])
    trt.LayerType = _enum("LayerType", api["LayerType"])
    trt.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM", "DLA_GLOBAL_DRAM"])
    trt.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    dtypes = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"] + (["FP8", "BF16", "INT64", "INT4"] if major >= 10
                                                                     else [])
    trt.DataType = _enum("DataType", dtypes)
    trt.float32, trt.float16, trt.int32, trt.bool = (trt.DataType.FLOAT, trt.DataType.HALF, trt.DataType.INT32,
                                                     trt.DataType.BOOL)
    np_of = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT32: np.int32,
             trt.DataType.BOOL: np.bool_, trt.DataType.INT8: np.int8, trt.DataType.UINT8: np.uint8}
    if major >= 10:
        np_of[trt.DataType.INT64] = np.int64
    trt.nptype = lambda dt: np_of[dt]
    layer_types = {t.name for t in trt.LayerType}

    def init_libnvinfer_plugins(logger, namespace):
        trt.plugins_initialized.append(namespace)
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins

    def from_onnx(elem: int):
        import onnx

        table = {onnx.TensorProto.FLOAT: trt.DataType.FLOAT, onnx.TensorProto.FLOAT16: trt.DataType.HALF,
                 onnx.TensorProto.INT32: trt.DataType.INT32, onnx.TensorProto.BOOL: trt.DataType.BOOL,
                 onnx.TensorProto.UINT8: trt.DataType.UINT8, onnx.TensorProto.INT8: trt.DataType.INT8,
                 onnx.TensorProto.DOUBLE: trt.DataType.FLOAT,
                 onnx.TensorProto.INT64: trt.DataType.INT64 if major >= 10 else trt.DataType.INT32}
        return table[elem]

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

        def __init__(self, min_severity=2):
            self.min_severity = min_severity

    class Tensor:
        def __init__(self, name, dtype, shape=()):
            self.name, self.dtype, self.shape = name, dtype, tuple(shape)

    class Layer:
        def __init__(self, name, kind, inputs, outputs):
            self.name, self.type, self._inputs, self._outputs = name, trt.LayerType[kind], inputs, outputs
            self._precision, self._output_types = None, {}

        num_inputs = property(lambda self: len(self._inputs))
        num_outputs = property(lambda self: len(self._outputs))

        def get_input(self, i):
            return self._inputs[i]

        def get_output(self, i):
            return self._outputs[i]

        def get_output_type(self, i):
            return self._output_types.get(i, self._outputs[i].dtype)

    if api["layer_precision"] != "absent":  # 11: ILayer has no precision API at all (pyGraph.cpp)
        def _warn():
            if api["layer_precision"] == "deprecated":
                warnings.warn(f"Use {api['layer_precision_deprecation']} instead.", DeprecationWarning, stacklevel=3)

        def _get_precision(self):
            return self._precision if self._precision is not None else trt.float32

        def _set_precision(self, dtype):
            _warn()
            self._precision = dtype

        def _set_output_type(self, i, dtype):
            _warn()
            self._output_types[i] = dtype

        Layer.precision = property(_get_precision, _set_precision)
        Layer.precision_is_set = property(lambda self: self._precision is not None)
        Layer.set_output_type = _set_output_type
        Layer.output_type_is_set = lambda self, i: i in self._output_types

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.inputs, self.outputs, self.layers, self.onnx, self.model = [], [], [], None, None

        def has_flag(self, name):
            member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
            return member is not None and bool(self.flags & (1 << int(member)))

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))
        num_outputs = property(lambda self: len(self.outputs))
        get_input = lambda self, i: self.inputs[i]  # noqa: E731
        get_layer = lambda self, i: self.layers[i]  # noqa: E731
        get_output = lambda self, i: self.outputs[i]  # noqa: E731

    class ParserError:
        def __init__(self, finding: rules.Finding):
            self.finding = finding

        def code(self):
            return self.finding.code

        def desc(self):
            return self.finding.desc

        def node(self):
            return self.finding.node

        def func(self):
            return self.finding.func

        def __str__(self):
            return self.finding.error_text((major, minor))

        __repr__ = __str__

    class OnnxParser:
        def __init__(self, network, logger):
            if not isinstance(network, Network):
                raise TypeError("OnnxParser(): incompatible constructor arguments")
            self.network, self.errors = network, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i):
            return self.errors[i]

        def clear_errors(self):
            self.errors = []

        def parse(self, model: bytes, path=None) -> bool:
            import onnx

            return self._parse(onnx.load_from_string(bytes(model)))

        def parse_from_file(self, model: str) -> bool:
            import onnx

            return self._parse(onnx.load(model))

        def _parse(self, model) -> bool:
            import onnx

            net = self.network
            if major < 10 and not net.has_flag("EXPLICIT_BATCH"):
                rule = next(r for r in RULES["parsers"]["8.6"]["rules"] if r["id"] == "explicit_batch_required")
                self.errors.append(ParserError(rules.Finding(rule["id"], "refuse", -1, "", "", rule["code"],
                                                             rule["func"], rule["desc"], "")))
                return False
            refused = rules.refusals(model, (major, minor))
            if refused:
                if refused[0].rule == "fallback_plugin_not_found":
                    trt.log.append(f"INFO: No importer registered for op: {refused[0].op}. Attempting to import as "
                                   f"plugin.")
                self.errors.append(ParserError(refused[0]))  # the parser stops at the first failing node
                return False
            imported = rules.as_imported(model, (major, minor))
            inferred = onnx.shape_inference.infer_shapes(imported)
            types_ = {v.name: v.type.tensor_type.elem_type for v in
                      list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
            weights = {i.name for i in model.graph.initializer} | {
                o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
            tensors = {}

            def tensor(name):
                if name not in tensors:
                    tensors[name] = Tensor(name, from_onnx(types_.get(name, onnx.TensorProto.FLOAT)))
                return tensors[name]

            net.inputs = [tensor(i.name) for i in model.graph.input if i.name not in weights]
            net.layers, constants = [], set()
            for node in model.graph.node:
                kinds = IMPORTER_LAYERS.get(node.op_type, ["PLUGIN_V2"])
                if not kinds:
                    continue
                ins = []
                for k, name in enumerate(node.input):
                    if not name:
                        continue
                    if name in weights and k in WEIGHT_INPUTS.get(node.op_type, set()):
                        continue  # read as weights by the importer
                    if name in weights and name not in constants:  # a weight used as a tensor: a CONSTANT layer
                        constants.add(name)
                        net.layers.append(Layer(f"{name}_constant", "CONSTANT", [], [tensor(name)]))
                    ins.append(tensor(name))
                for j, kind in enumerate(kinds):
                    kind = kind if kind in layer_types else "PLUGIN_V2"
                    last = j == len(kinds) - 1
                    outs = [tensor(o) for o in node.output if o] if last else [
                        Tensor(f"{node.name}_{kind.lower()}_{j}", tensor(node.output[0]).dtype)]
                    net.layers.append(Layer(node.name if last else f"{node.name}_{j}", kind, ins, outs))
                    ins = outs
            net.outputs = [tensor(o.name) for o in model.graph.output]
            net.model = imported
            net.onnx = imported.SerializeToString()
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - the real keyword names
            lo, mid, hi = tuple(min), tuple(opt), tuple(max)
            if not (len(lo) == len(mid) == len(hi)) or not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
                raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
            self.shapes[input] = (lo, mid, hi)

    TIMING_MAGIC = b"FAKE-TRT-TIMING\n"

    class TimingCache:
        def __init__(self, device: str, entries: int = 0):
            self.device, self.entries = device, entries

        def serialize(self):
            return memoryview(TIMING_MAGIC + json.dumps({"device": self.device, "entries": self.entries}).encode())

    def this_device():
        rt = sys.modules.get("cuda.bindings.runtime") or sys.modules.get("cuda.cudart")
        props = getattr(rt, "props", None)
        return f"{version}:{props.name.decode() if props else '?'}:{getattr(props, 'multiProcessorCount', 0)}"

    class BuilderConfig:
        def __init__(self):
            self.flags, self.profiles, self.pools, self.timing = set(), [], {}, None

        def set_memory_pool_limit(self, pool, pool_size):
            self.pools[pool] = int(pool_size)

        def set_flag(self, flag):
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError("set_flag(): incompatible function arguments")
            self.flags.add(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            data = bytes(serialized_timing_cache)
            if not data:
                return TimingCache(this_device())
            if not data.startswith(TIMING_MAGIC):
                trt.log.append("ERROR: timing cache blob is not a timing cache")
                return None
            body = json.loads(data[len(TIMING_MAGIC):])
            return TimingCache(body["device"], body["entries"])

        def set_timing_cache(self, cache, ignore_mismatch):
            if not isinstance(cache, TimingCache):
                raise TypeError("set_timing_cache(): incompatible function arguments")
            if cache.device != this_device() and not ignore_mismatch:
                trt.log.append("ERROR: timing cache was created on a different device or TensorRT version")
                return False
            self.timing = cache
            return True

        def get_timing_cache(self):
            return self.timing

    class HostMemory:
        def __init__(self, data: bytes):
            self.data = data

        nbytes = property(lambda self: len(self.data))

        def __bytes__(self):
            return self.data

        def __buffer__(self, flags):
            return memoryview(self.data)

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            if not isinstance(flags, int):
                raise TypeError("create_network(): incompatible function arguments")
            return Network(int(flags))

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if not network.onnx:
                trt.log.append("ERROR: network has no layers")
                return None
            dynamic = {t.name for t in network.inputs}
            if not config.profiles or dynamic - set(config.profiles[0].shapes):
                trt.log.append("ERROR: Network has dynamic or shape inputs, but no optimization profile has been "
                               "defined.")
                return None
            pinned = [(layer.name, layer.type.name) for layer in network.layers
                      if getattr(layer, "precision_is_set", False) and layer._precision == trt.float32]
            strongly = major >= 11 or network.has_flag("STRONGLY_TYPED")  # 11: always (NvInfer.h)
            trt.builds.append({"network_flags": network.flags, "flags": sorted(f.name for f in config.flags),
                               "profile": config.profiles[0].shapes, "pinned": pinned, "strongly_typed": strongly})
            if config.timing is not None:
                config.timing.entries += len(network.layers)
            header = {"version": version, "profile": {k: [list(s) for s in v] for k, v in
                                                      config.profiles[0].shapes.items()}}
            return HostMemory(json.dumps(header).encode() + b"\n" + network.onnx)

    class Engine:
        def __init__(self, header, onnx_bytes):
            import onnx
            import onnxruntime as ort

            self.model = onnx.load_from_string(onnx_bytes)
            self.profile = {k: [tuple(s) for s in v] for k, v in header["profile"].items()}
            self.io = [(i.name, trt.TensorIOMode.INPUT, from_onnx(i.type.tensor_type.elem_type)) for i in
                       self.model.graph.input]
            self.io += [(o.name, trt.TensorIOMode.OUTPUT, from_onnx(o.type.tensor_type.elem_type)) for o in
                        self.model.graph.output]
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

        num_io_tensors = property(lambda self: len(self.io))

        def get_tensor_name(self, index):
            return self.io[index][0]

        def _io(self, name):
            return next(t for t in self.io if t[0] == name)

        def get_tensor_mode(self, name):
            return self._io(name)[1]

        def get_tensor_dtype(self, name):
            return self._io(name)[2]

        def get_tensor_shape(self, name):
            value = next(v for v in (*self.model.graph.input, *self.model.graph.output) if v.name == name)
            return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)

        def get_tensor_profile_shape(self, name, profile_index):
            return self.profile[name]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.executions = engine, {}, {}, 0

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.profile[name]
            if len(shape) != len(lo) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                trt.log.append(f"ERROR: IExecutionContext::setInputShape: shape {tuple(shape)} of {name} is outside "
                               f"its profile")
                return False
            self.shapes[name] = tuple(int(s) for s in shape)
            return True

        def get_tensor_shape(self, name):
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                return self.shapes.get(name, self.engine.get_tensor_shape(name))
            feeds = {n: np.zeros(s, trt.nptype(self.engine.get_tensor_dtype(n))) for n, s in self.shapes.items()}
            if set(feeds) != {n for n, m, _ in self.engine.io if m == trt.TensorIOMode.INPUT}:
                return self.engine.get_tensor_shape(name)  # -1 where an input shape is still unset
            out = self.engine.session.run([name], feeds)[0]
            return tuple(out.shape)

        def set_tensor_address(self, name, memory):
            if all(t[0] != name for t in self.engine.io):
                trt.log.append(f"ERROR: IExecutionContext::setTensorAddress: no tensor named {name}")
                return False
            self.addresses[name] = int(memory)
            return True

        def _array(self, name, shape):
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            n = int(np.prod(shape)) * dtype.itemsize
            _check_room(name, self.addresses[name], n)
            return np.frombuffer((ctypes.c_char * n).from_address(self.addresses[name]), dtype).reshape(shape)

        def execute_async_v3(self, stream_handle):
            int(stream_handle)  # pybind: an int or an object with __int__ (cuda-python's cudaStream_t), else TypeError
            feeds = {name: self._array(name, shape).copy() for name, shape in self.shapes.items()}
            for o in self.engine.model.graph.output:
                out = self.engine.session.run([o.name], feeds)[0]
                out = np.ascontiguousarray(out, trt.nptype(self.engine.get_tensor_dtype(o.name)))
                _check_room(o.name, self.addresses[o.name], out.nbytes)
                ctypes.memmove(self.addresses[o.name], out.ctypes.data, out.nbytes)
            self.executions += 1
            return True

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            head, _, body = bytes(serialized_engine).partition(b"\n")
            try:
                header = json.loads(head)
            except (json.JSONDecodeError, UnicodeDecodeError):
                trt.log.append("ERROR: IRuntime::deserializeCudaEngine: the blob is not an engine")
                return None
            if header.get("version") != version:  # an engine from another TensorRT version is refused
                trt.log.append("ERROR: IRuntime::deserializeCudaEngine: engine plan built by another TensorRT")
                return None
            return Engine(header, body)

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


def _check_room(name: str, address: int, nbytes: int) -> None:
    """The fake device memory's guard: a real engine would write past a too small buffer without a word."""
    for rt in (sys.modules.get("cuda.bindings.runtime"), sys.modules.get("cuda.cudart")):
        size = getattr(rt, "sizes", {}).get(address) if rt is not None else None
        if size is not None:
            if nbytes > size:
                raise AssertionError(f"device buffer of {name!r} holds {size} bytes, the engine needs {nbytes}: "
                                     f"a real engine would overrun it")
            return


class cudaStream_t:  # noqa: N801 - cuda-python's name
    def __init__(self, handle: int):
        self.handle = handle

    def __int__(self):
        return self.handle

    def getPtr(self):  # noqa: N802
        return self.handle


def make_cudart(gpu: str = "Orin", capability=(8, 7), memory_mb: int = 30592, sms: int = 16,
                cuda_python: str = "12.9.0", driver: bool = True) -> types.ModuleType:
    """cuda-python's runtime API subset bgprompt uses; device memory is host memory (ctypes buffers)."""
    facts = CUDA_FACTS["versions"][cuda_python]
    rt = types.ModuleType(facts["runtime_module"])
    rt.version = cuda_python
    rt.cudaError_t = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInvalidValue": 1,
                                                  "cudaErrorMemoryAllocation": 2, "cudaErrorInsufficientDriver": 35,
                                                  "cudaErrorNoDevice": 100})
    rt.cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2})
    rt.cudaStream_t = cudaStream_t
    ok = rt.cudaError_t.cudaSuccess
    rt.buffers, rt.sizes, rt.fail = {}, {}, {}
    rt.props = types.SimpleNamespace(name=gpu.encode(), major=capability[0], minor=capability[1],
                                     totalGlobalMem=memory_mb << 20, multiProcessorCount=sms)
    rt.driver = driver

    def call(name, fn):
        def wrapper(*args):
            if not rt.driver:
                if facts["missing_driver"] == "raises":  # 12.2 / 12.6.0: cuda/_cuda/ccuda.pyx cuPythonInit
                    raise RuntimeError("Failed to dlopen libcuda.so.1")
                return (rt.cudaError_t.cudaErrorInsufficientDriver,) + ((None,) if name not in NO_VALUE else ())
            if name in rt.fail:
                return (rt.fail[name],) + ((None,) if name not in NO_VALUE else ())
            return fn(*args)
        return wrapper

    def malloc(n):
        buf = ctypes.create_string_buffer(int(n))
        rt.buffers[ctypes.addressof(buf)] = buf
        rt.sizes[ctypes.addressof(buf)] = int(n)
        return ok, ctypes.addressof(buf)

    def copy(dst, src, n, kind, stream):
        for ptr in (int(dst), int(src)):
            for base, size in rt.sizes.items():
                if base <= ptr < base + size and ptr + int(n) > base + size:
                    raise AssertionError(f"cudaMemcpyAsync of {n} bytes overruns a {size}-byte device buffer")
        ctypes.memmove(int(dst), int(src), int(n))
        return (ok,)

    def free(ptr):
        rt.buffers.pop(int(ptr))
        rt.sizes.pop(int(ptr))
        return (ok,)

    streams = iter(range(0x1000, 1 << 30))
    NO_VALUE = {"cudaStreamSynchronize", "cudaStreamDestroy", "cudaFree", "cudaMemcpyAsync"}
    for name, fn in {"cudaGetDeviceCount": lambda: (ok, 1), "cudaGetDevice": lambda: (ok, 0),
                     "cudaGetDeviceProperties": lambda dev: (ok, rt.props),
                     "cudaStreamCreate": lambda: (ok, cudaStream_t(next(streams))),
                     "cudaStreamSynchronize": lambda s: (ok,), "cudaStreamDestroy": lambda s: (ok,),
                     "cudaMalloc": malloc, "cudaFree": free, "cudaMemcpyAsync": copy}.items():
        setattr(rt, name, call(name, fn))

    def get_error_name(error):
        if not isinstance(error, rt.cudaError_t):
            raise TypeError(f"Argument 'error' is not instance of type (expected <class 'cuda.bindings.runtime."
                            f"cudaError_t'>, found {type(error)})")
        return ok, error.name.encode()

    rt.cudaGetErrorName = get_error_name
    return rt


def install(monkeypatch, version: str, cuda_python: str = "12.9.0", **gpu) -> tuple[types.ModuleType,
                                                                                   types.ModuleType]:
    """Put a fake tensorrt (``version``) and cuda-python (``cuda_python``) in sys.modules for one test."""
    trt, rt = make_tensorrt(version), make_cudart(cuda_python=cuda_python, **gpu)
    cuda = types.ModuleType("cuda")
    modules = {"tensorrt": trt, "cuda": cuda}
    if rt.__name__ == "cuda.bindings.runtime":  # 12.9: cuda.bindings, and cuda.cudart re-exporting it
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime, cuda.bindings, cuda.cudart = rt, bindings, rt
        modules.update({"cuda.bindings": bindings, "cuda.bindings.runtime": rt, "cuda.cudart": rt})
    else:  # 12.2 / 12.6.0: cuda.cudart only
        cuda.cudart = rt
        modules["cuda.cudart"] = rt
        for name in ("cuda.bindings", "cuda.bindings.runtime"):
            monkeypatch.delitem(sys.modules, name, raising=False)
    for name, mod in modules.items():
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec finds it
        monkeypatch.setitem(sys.modules, name, mod)
    return trt, rt
