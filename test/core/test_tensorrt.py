"""The TensorRT deployment path without a GPU: every graph the project exports checked against the real parsers'
rules (onnx_tensorrt_rules.py, from onnx-tensorrt's sources per release) and with onnxruntime, and the TensorRT
calls made against a fake ``tensorrt`` per version whose API, refusals and warnings are the real ones
(fake_tensorrt.py says where each comes from). Engines are compared with torch, never with onnxruntime alone."""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import fake_tensorrt
import onnx_tensorrt_rules as trt_rules
from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator
from bgprompt_core.runtime.export import export_onnx
from bgprompt_core.runtime.graph_contract import DEFAULT_OPSET, METADATA_KEY, opset_of, read_onnx_metadata, split_shape_slices
from bgprompt_core.runtime.build import SHIPPED_GRAPHS, ModelLoadError, build_model, build_runtime, check_tensorrt_available, engine_name
from bgprompt_core.runtime.tensorrt_backend import (TensorRTBackend, TensorRTError, build_engine, features, network_flags,
                                            pin_float32_layers, rebuild_reason)
from tiny_models import FAMILIES

VERSIONS = fake_tensorrt.VERSIONS
PARSERS = ("8.6", "10", "11")
MAX_OBJECTS = 16
MINI = {f"mini-{p}{'-fp16' if half else ''}": (p, half) for p in ("1bg", "pnet", "tabletop") for half in (False, True)}
TINY = {f"tiny-{f}": f for f in FAMILIES}
ALL_GRAPHS = [*MINI, *TINY, "object-range"]


class Exports:
    """Every graph the project can export, each exported at most once per test session (on first use)."""

    def __init__(self, root):
        self.root, self.paths, self.models = root, {}, {}

    def model(self, name: str):
        if name in self.models:
            return self.models[name]
        from bgprompt_core.method.config import DepthTransformConfig, FourierPromptConfig
        from bgprompt_core.networks.loading import build_depth_net
        from bgprompt_core.method.model import PromptedDepth
        from bgprompt_core.method.prompts import FourierPrompt
        from tiny_models import small_config

        if name in MINI:
            model = build_model(EstimatorConfig(model="mini", prompt=MINI[name][0]))
        else:
            torch.manual_seed(0)
            cfg, spec, _ = small_config(TINY.get(name, "depth_anything"))
            net = build_depth_net(cfg, spec)
            if spec.output_kind == "relative_disparity":  # condition a random disparity head for Eq. 2
                last = [m for m in net.model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
                with torch.no_grad():
                    last.weight.mul_(1e4)
                    last.bias.fill_(1.0)
            size = spec.input_size[0]
            if name == "object-range":  # Eq. 2 over the object (--eq2-range object), no prompt
                model = PromptedDepth(net, None, transform=DepthTransformConfig(range="object"))
            else:
                model = PromptedDepth(net, FourierPrompt(FourierPromptConfig(height=size, width=size)))
        self.models[name] = model.eval()
        return self.models[name]

    def size(self, name: str) -> int:
        return self.model(name).net.spec.input_size[0]

    def __getitem__(self, name: str):
        if name not in self.paths:
            half = MINI.get(name, (None, False))[1]
            max_batch = MAX_OBJECTS if name in MINI or name == "object-range" else 4
            self.paths[name] = export_onnx(self.model(name), self.root / f"{name}.onnx", self.size(name),
                                           max_batch=max_batch, half=half)
        return self.paths[name]


@pytest.fixture(scope="session")
def graphs(tmp_path_factory):
    return Exports(tmp_path_factory.mktemp("graphs"))


def _inputs(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.random((n, 3, size, size), dtype=np.float32)
    mask = np.zeros((n, 1, size, size), np.float32)
    for k in range(n):
        y, x = rng.integers(0, size // 2, 2)
        mask[k, 0, y:y + size // 2, x:x + size // 2] = 1
    return image, mask


def _torch_depth(graphs, name, image, mask) -> np.ndarray:
    with torch.no_grad():
        return graphs.model(name)(torch.from_numpy(image), torch.from_numpy(mask))["depth"].numpy()


def _rel(name: str) -> float:
    """Float32 rounding through the network, relative to the depth's spread: 1e-4 for mini; 5e-3 for the random
    tiny networks, whose disparity heads are scaled by 1e4 to give Eq. 2 a usable range (they amplify rounding)."""
    return 1e-4 if name in MINI else 5e-3


def _close_to_torch(got, ref, mask, rel=1e-4):
    """Equal within ``rel`` of the depth's own spread over the objects (float32 rounding through the network)."""
    on = np.broadcast_to(mask[:, 0] > 0, ref.shape) & np.isfinite(ref)
    scale = float(ref[on].std())
    err = float(np.abs(got[on] - ref[on]).max())
    assert scale > 1e-3 and err <= rel * scale, (f"max |error| {err:.3g} vs tolerance {rel * scale:.3g} "
                                                 f"(depth std {scale:.3g})")
    return err, scale


# --- every exportable graph against the parsers' rules (static) ---------------------------------------------------
@pytest.mark.parametrize("path", sorted({p for kinds in SHIPPED_GRAPHS.values() for p in kinds.values()}),
                         ids=lambda p: p.name)
def test_the_shipped_graph_files_pass_every_tensorrt_parsers_rules(path):
    """What robots run: the graph FILES in the package (make graphs), not a fresh export, break no parser rule."""
    proto = onnx.load(str(path))
    for version in PARSERS:
        assert not trt_rules.check(proto, version), (path.name, version)
    assert not trt_rules.onnxruntime_cuda_refusals(proto)
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"]


@pytest.mark.parametrize("name", ALL_GRAPHS)
def test_every_exported_graph_passes_every_tensorrt_parsers_rules(graphs, name):
    """Each shipped prompt (fp32 and fp16), a tiny network of each registry family, and an Eq.-2-over-the-object
    graph break no rule of the 8.6, 10.x or 11 parser (onnx-tensorrt release/8.6-GA and 10.1-GA sources: the
    Supported and Restrictions columns of operators.md, training-mode BatchNormalization, node outputs beyond the
    importer's, Shape start/end and Reduce axes inputs that 8.6 drops), and none that onnxruntime's CUDA provider
    refuses."""
    proto = onnx.load(str(graphs[name]))
    assert opset_of(proto) == DEFAULT_OPSET == 17
    for version in PARSERS:
        found = trt_rules.check(proto, version)
        assert not found, (version, [f"{f.rule}: {f.error_text((int(version.split('.')[0]), 0))} [{f.source}]"
                                     for f in found[:5]])
    assert not trt_rules.onnxruntime_cuda_refusals(proto)
    # opset 17: axes is an attribute (8.6 ignores an opset-18 axes input and would reduce over the whole batch);
    # ReduceSum has taken axes as an input since opset 13, which 8.6 reads (from an initializer)
    for n in (n for n in proto.graph.node if n.op_type.startswith("Reduce") and n.op_type != "ReduceSum"):
        assert len(n.input) == 1 and any(a.name == "axes" for a in n.attribute), onnx.helper.printable_node(n)
    if name in MINI or name == "object-range":
        eq2 = [n for n in proto.graph.node if n.op_type in ("ReduceMin", "ReduceMax")]
        assert len(eq2) == 2 and all([list(a.ints) for a in n.attribute if a.name == "axes"] == [[1]] for n in eq2)
    meta = read_onnx_metadata(graphs[name])
    assert meta["opset"] == 17 and meta["precision"] == ("fp16" if name.endswith("fp16") else "fp32")


@pytest.mark.parametrize("name", ["mini-1bg", "mini-pnet", "object-range", "tiny-depth_anything", "tiny-dpt_hybrid"])
def test_each_graph_computes_the_same_as_tensorrt_8_6_imports_it(graphs, name):
    """onnxruntime on the graph as 8.6's parser reads it (Shape start/end and Reduce axes inputs dropped) gives the
    depth of the graph itself, batch 1 and batch 3, and that depth is torch's."""
    proto = onnx.load(str(graphs[name]))
    as_86 = ort.InferenceSession(trt_rules.as_imported(proto, "8.6").SerializeToString(),
                                 providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(graphs[name]), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        image, mask = _inputs(n, graphs.size(name), seed=n)
        want = plain.run(["depth"], {"image": image, "mask": mask})[0]
        got = as_86.run(["depth"], {"image": image, "mask": mask})[0]
        assert np.array_equal(np.isnan(got), np.isnan(want)) and np.allclose(got, want, equal_nan=True)
        _close_to_torch(want, _torch_depth(graphs, name, image, mask), mask, _rel(name))


def _shape_slice_graph():
    """x (N, 3, 8, 8) -> Resize to (N, 3, 16, 16) with sizes = Concat(Shape(x, end=2), [16, 16]), as the dynamo
    exporter writes interpolate() of Depth-Anything-class networks."""
    h = onnx.helper
    nodes = [h.make_node("Shape", ["x"], ["nc"], end=2, name="shape_nc"),
             h.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             h.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3, 16, 16])],
                         [onnx.numpy_helper.from_array(np.array([16, 16], np.int64), "hw")])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_shape_start_end_is_split_so_that_8_6_reads_it_right():
    model = _shape_slice_graph()
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert [f.rule for f in trt_rules.check(model, "8.6")] == ["shape_start_end_ignored"]
    assert not trt_rules.check(model, "10")  # 10.x reads start/end (onnxOpImporters.cpp:5224-5254)
    with pytest.raises(Exception, match="sizes"):  # what 8.6 computes: 'sizes' of rank 6 for a rank-4 input
        ort.InferenceSession(trt_rules.as_imported(model, "8.6").SerializeToString(),
                             providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert split_shape_slices(model) == 1
    onnx.checker.check_model(model)
    assert not trt_rules.check(model, "8.6")
    for version in ("8.6", "10"):
        got = ort.InferenceSession(trt_rules.as_imported(model, version).SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        assert got.shape == (2, 3, 16, 16) and np.array_equal(got, want)


def _one_node_graph(op, inputs, attrs=None, n_out=1, opset=17, initializers=()):
    h = onnx.helper
    node = h.make_node(op, [i for i, _ in inputs], [f"y{k}" for k in range(n_out)], name="n", **(attrs or {}))
    graph = h.make_graph([node], "g", [h.make_tensor_value_info(i, t, None) for i, t in inputs
                                       if i not in {x.name for x in initializers}],
                         [h.make_tensor_value_info(f"y{k}", onnx.TensorProto.FLOAT, None) for k in range(n_out)],
                         list(initializers))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])


def test_the_rules_refuse_what_each_parser_refuses_and_cite_their_source():
    """Hand-made graphs, one per rule: the checker finds each (so the static test above can fail), for the
    versions the source says, and every rule names its repository, commit, file and lines."""
    F, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    axes = onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")
    cases = [  # (graph, {parser: expected rule ids})
        (_one_node_graph("DFT", [("x", F)]), {"8.6": ["fallback_plugin_not_found"], "10": ["fallback_plugin_not_found"]}),
        (_one_node_graph("BatchNormalization", [("x", F), ("s", F), ("b", F), ("m", F), ("v", F)],
                         {"training_mode": 1}, n_out=3),
         {"8.6": ["batchnorm_training_mode", "more_outputs_than_importer"], "10": ["more_outputs_than_importer"]}),
        (_one_node_graph("Squeeze", [("x", F), ("a", I64)]),
         {"8.6": ["squeeze_axes_initializer", "restriction:input_is_weights:axes"],
          "10": ["squeeze_axes_initializer", "restriction:input_is_weights:axes"]}),
        (_one_node_graph("Squeeze", [("x", F), ("axes", I64)], initializers=[axes]), {"8.6": [], "10": []}),
        (_one_node_graph("ReduceMin", [("x", F), ("axes", I64)], opset=18, initializers=[axes]),
         {"8.6": ["reduce_axes_input_ignored"], "10": []}),
        (_one_node_graph("ReduceMin", [("x", F), ("a", I64)], opset=18),
         {"8.6": ["reduce_axes_input_ignored"], "10": ["reduce_axes_initializer", "restriction:input_is_weights:axes"]}),
        (_one_node_graph("Shape", [("x", F)], {"start": 2}), {"8.6": ["shape_start_end_ignored"], "10": []}),
        (_one_node_graph("Resize", [("x", F), ("", F), ("sc", F)], {"coordinate_transformation_mode":
                                                                      "tf_crop_and_resize"}),
         {"8.6": ["resize_coordinate_transformation", "restriction:resize_modes"], "10": ["restriction:resize_modes"]}),
        (_one_node_graph("MaxPool", [("x", F)], {"kernel_shape": [3]}, n_out=2),
         {"8.6": ["restriction:pool_2d_3d", "restriction:single_output"],
          "10": ["restriction:pool_2d_3d", "restriction:single_output"]}),
        (_one_node_graph("Slice", [("x", F), ("s", I64), ("e", I64), ("a", I64)]),
         {"8.6": ["slice_axes_known", "restriction:input_is_weights:axes"],
          "10": ["slice_axes_known", "restriction:input_is_weights:axes"]}),
    ]
    for model, expected in cases:
        for version, rules in expected.items():
            got = [f.rule for f in trt_rules.check(model, version)]
            assert got == rules, (model.graph.node[0].op_type, version, got)
    for key, parser in trt_rules.RULES["parsers"].items():
        assert len(parser["commit"]) == 40 and parser["repository"] == "onnx/onnx-tensorrt"
        for rule in parser["rules"]:
            assert rule["source"]["file"] and len(rule["source"]["lines"]) == 2 and rule["source"]["quote"], rule
        assert all("line" in row for row in parser["operators"].values())
    for version, api in trt_rules.RULES["api"].items():
        assert api["repository"] == "NVIDIA/TensorRT" and len(api["commit"]) == 40


def test_bit_weight_standardization_folds_into_the_same_convolutions():
    """The 13 weight-standardized convs of mini's BiT become plain convs computing the same (to float32 rounding)."""
    from transformers.models.bit.modeling_bit import WeightStandardizedConv2d

    from bgprompt_core.networks.weight_folding import StandardizedConv2d, fold_weight_standardization

    net = build_model(EstimatorConfig(model="mini", prompt="none")).net
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        before = net(x)
        convs = {n: m for n, m in net.named_modules() if isinstance(m, WeightStandardizedConv2d)}
        probes = {n: (m, torch.rand(1, m.in_channels, 16, 16)) for n, m in convs.items()}
        expect = {n: m(p) for n, (m, p) in probes.items()}
        assert fold_weight_standardization(net) == len(convs) == 13
        assert not any(isinstance(m, WeightStandardizedConv2d) for m in net.modules())
        for n, (_, p) in probes.items():
            folded = net.get_submodule(n)
            assert isinstance(folded, StandardizedConv2d)
            assert torch.allclose(folded(p), expect[n], rtol=1e-5, atol=1e-6), n
        after = net(x)
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5 * float(before.std()))


@pytest.mark.parametrize("name", ["mini-1bg", "mini-pnet", "mini-1bg-fp16"])
def test_exported_mini_graph_gives_torchs_depth_within_the_depths_scale(graphs, name):
    """The folded graph against the unfolded torch model, batch 4: within 1e-4 of the depth's spread (fp32);
    fp16 runs the network in half precision against torch's fp32: measured 3.9e-2 of the spread, bound 6e-2."""
    image, mask = _inputs(4, 128, seed=5)
    got = ort.InferenceSession(str(graphs[name]), providers=["CPUExecutionProvider"]).run(
        ["depth"], {"image": image, "mask": mask})[0]
    ref = _torch_depth(graphs, name, image, mask)
    _close_to_torch(got, ref, mask, rel=6e-2 if name.endswith("fp16") else 1e-4)


@pytest.mark.parametrize("name", ["mini-1bg", "mini-pnet", "object-range"])
def test_each_objects_depth_is_the_same_alone_and_in_a_full_batch(graphs, name):
    """Eq. 2 normalises per object: an object's depth must not depend on the other objects of its batch."""
    size = graphs.size(name)
    image, mask = _inputs(MAX_OBJECTS, size, seed=1)
    session = ort.InferenceSession(str(graphs[name]), providers=["CPUExecutionProvider"])
    batch = session.run(["depth"], {"image": image, "mask": mask})[0]
    spread = []
    for k in (0, 7, MAX_OBJECTS - 1):
        alone = session.run(["depth"], {"image": image[k:k + 1], "mask": mask[k:k + 1]})[0][0]
        assert np.allclose(alone, batch[k], rtol=1e-5, atol=1e-6), float(np.abs(alone - batch[k]).max())
        spread.append(float(batch[k].max() - batch[k].min()))
    assert min(spread) > 0.1  # non-trivial depth maps were compared
    _close_to_torch(batch, _torch_depth(graphs, name, image, mask), mask, _rel(name))


def test_export_refuses_an_opset_it_could_not_write(tmp_path, monkeypatch):
    """The exporter keeps its own opset when down-conversion fails; that graph must not pass as opset 17."""
    model = build_model(EstimatorConfig(model="mini", prompt="1bg"))
    real_load = onnx.load

    def load_as_18(path, *a, **k):  # simulate a failed down-conversion: the file says opset 18
        proto = real_load(path, *a, **k)
        for o in proto.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = 18
        return proto

    monkeypatch.setattr(onnx, "load", load_as_18)
    from bgprompt_core.runtime.graph_contract import GraphError

    with pytest.raises(GraphError, match="could not write opset 17"):
        export_onnx(model, tmp_path / "m.onnx", 128)
    assert not list(tmp_path.iterdir())  # atomic: nothing half-written is left


# --- the fake parser refuses what the real one refuses ------------------------------------------------------------
@pytest.fixture(scope="module")
def unfolded_mini(tmp_path_factory, graphs):
    """mini's 1-BG graph exported WITHOUT folding BiT's weight standardization (what the export wrote before)."""
    import bgprompt_core.method.deployable as deployable
    import bgprompt_core.runtime.export as export

    path = tmp_path_factory.mktemp("unfolded") / "mini-unfolded.onnx"
    mp = pytest.MonkeyPatch()
    mp.setattr(deployable, "fold_weight_standardization", lambda net: 0)
    mp.setattr(export, "tensorrt_blockers", lambda proto: [])
    try:
        export_onnx(graphs.model("mini-1bg"), path, 128, max_batch=4)
    finally:
        mp.undo()
    return path


@pytest.mark.parametrize("version, text", [
    ("8.6.1", 'In node 150 (importBatchNormalization): UNSUPPORTED_NODE: Assertion failed: !isTraining && "This version'
              ' of TensorRT does not support training_mode == 1 in BatchNormalization."'),
    ("10.3.0", "and operator: BatchNormalization (parseNode): INVALID_GRAPH: Assertion failed: "
               "(node.output().size() <= static_cast<int32_t>(outputs.size())): Node has more output tensors than TRT expected, expected output "
               "size is 1, actual output size is 3."),
    ("11.0.0", "expected output size is 1, actual output size is 3.")])
def test_the_unfolded_bit_graph_is_refused_as_the_real_parsers_refuse_it(unfolded_mini, tmp_path, monkeypatch,
                                                                        version, text):
    """The failure of issue 25 (and spacewalk01/depth-anything-tensorrt#48 on 10.3): the graph the export wrote
    before folding has 13 training-mode BatchNormalization nodes with 3 outputs each; onnxruntime's CUDA provider
    refuses them too."""
    proto = onnx.load(str(unfolded_mini))
    bn = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    assert len(bn) == 13 and all(len(n.output) == 3 for n in bn)
    assert len(trt_rules.onnxruntime_cuda_refusals(proto)) == 13
    trt, _ = fake_tensorrt.install(monkeypatch, version)
    with pytest.raises(TensorRTError, match="could not parse") as err:
        build_engine(unfolded_mini, tmp_path, "fp32", 128, max_batch=4)
    assert text in str(err.value)
    assert not trt.builds


@pytest.mark.parametrize("version", ["8.6.1", "10.13.0"])
def test_an_op_without_importer_fails_with_the_real_plugin_error(graphs, tmp_path, monkeypatch, version):
    trt, _ = fake_tensorrt.install(monkeypatch, version)
    limit = 17 if version.startswith("8.") else 20
    if version.startswith("8."):  # the real parser would read opset 18 with 8.6's semantics: we refuse it first
        opset18 = export_onnx(graphs.model("mini-1bg"), tmp_path / "o18.onnx", 128, opset=18)
        with pytest.raises(TensorRTError, match="opset 18; TensorRT 8.6.1 reads up to 17: re-export .*--opset 17"):
            build_engine(opset18, tmp_path, "fp32", 128)
    dft = tmp_path / "dft.onnx"  # a graph with an operator TensorRT has no importer for
    proto = onnx.load(str(graphs["mini-1bg"]))
    proto.graph.node.append(onnx.helper.make_node("DFT", ["image"], ["spectrum"], name="dft"))
    onnx.save(proto, str(dft))
    with pytest.raises(TensorRTError, match="could not parse") as err:
        build_engine(dft, tmp_path, "fp32", 128)
    assert ("(importFallbackPluginImporter): UNSUPPORTED_NODE: Assertion failed: creator"
            in str(err.value)) and "Plugin not found, are the plugin name, version, and namespace correct?" in str(
        err.value)
    assert ("with name: dft and operator: DFT" in str(err.value)) == (limit == 20)  # 10.x names the node
    assert any("No importer registered for op: DFT. Attempting to import as plugin." in line for line in trt.log)
    assert not trt.builds and not list(tmp_path.glob("*.engine"))


# --- the TensorRT calls, per version ------------------------------------------------------------------------------
def _build(graphs, tmp_path, graph="mini-1bg", precision="fp32", max_batch=MAX_OBJECTS, engine="mini-1bg"):
    return build_engine(graphs[graph], tmp_path, precision, 128, max_batch=max_batch, name=engine)


@pytest.mark.parametrize("version", VERSIONS)
def test_network_flags_profiles_plugins_and_one_build_reused_across_two_starts(graphs, tmp_path, monkeypatch,
                                                                              version):
    trt, _ = fake_tensorrt.install(monkeypatch, version)
    flags = trt.NetworkDefinitionCreationFlag
    if version.startswith("8."):  # the fake refuses what the real 8.6 refuses: an implicit-batch network
        parser = trt.OnnxParser(trt.Builder(None).create_network(0), None)
        assert not parser.parse_from_file(str(graphs["mini-1bg"]))
        assert "only supports TensorRT INetworkDefinitions with an explicit batch" in str(parser.get_error(0))
    engine, reason = _build(graphs, tmp_path)
    assert reason == "no cached engine" and engine.name == "mini-1bg.engine"
    (build,) = trt.builds
    bits = build["network_flags"]
    major, minor = (int(x) for x in version.split(".")[:2])
    explicit = 1 << int(flags.EXPLICIT_BATCH) if hasattr(flags, "EXPLICIT_BATCH") else 0
    assert hasattr(flags, "EXPLICIT_BATCH") == (major < 11)  # gone in 11 (pyCore.cpp release/11.0)
    assert bool(bits & explicit) == (major < 10)  # 8.6 needs it; 10.x deprecates it
    if major == 10:
        assert bool(bits & (1 << int(flags.STRONGLY_TYPED))) == (minor >= 12)
    if major >= 11:  # always strongly typed: the deprecated STRONGLY_TYPED (value 0) is not set
        assert bits == 0 and int(flags.STRONGLY_TYPED) == 0
    assert build["strongly_typed"] == ((major, minor) >= (10, 12))
    assert build["profile"] == {"image": ((1, 3, 128, 128), (2, 3, 128, 128), (MAX_OBJECTS, 3, 128, 128)),
                                "mask": ((1, 1, 128, 128), (2, 1, 128, 128), (MAX_OBJECTS, 1, 128, 128))}
    assert trt.plugins_initialized == [""]  # init_libnvinfer_plugins(logger, "") before parsing
    # a second start (a new process: nothing in memory) reuses the engine: no build
    again, reason = _build(graphs, tmp_path)
    assert again == engine and reason is None and len(trt.builds) == 1
    timing = list(tmp_path.glob("timing-*.cache"))
    assert len(timing) == 1 and timing[0].read_bytes()  # the timing cache is kept for the next build


@pytest.mark.parametrize("version", ["8.6.1", "11.0.0"])
def test_rebuild_reason_names_what_changed_and_the_engine_is_replaced_in_place(graphs, tmp_path, monkeypatch,
                                                                               version):
    trt, rt = fake_tensorrt.install(monkeypatch, version)
    _build(graphs, tmp_path, max_batch=8)
    _, reason = _build(graphs, tmp_path, max_batch=MAX_OBJECTS)
    assert reason.startswith("cached engine was built for shapes:") and "[8, 3, 128, 128]" in reason
    rt.props.multiProcessorCount = 8  # an Orin NX: same name and compute capability as the AGX
    _, reason = _build(graphs, tmp_path)
    assert "multiprocessors: 16 -> 8" in reason
    _, reason = _build(graphs, tmp_path, "mini-pnet")  # another graph under the same engine name
    assert "onnx_sha256" in reason
    assert [p.name for p in tmp_path.glob("*.engine")] == ["mini-1bg.engine"] and len(trt.builds) == 4
    meta = json.loads((tmp_path / "mini-1bg.json").read_text())
    assert rebuild_reason(tmp_path / "mini-1bg.json", meta["key"]) is None
    assert meta["key"]["tensorrt"] == version and meta["graph"]["prompt"]["type"] == "pnet"


@pytest.mark.parametrize("version", VERSIONS)
def test_fp16_keeps_normalisation_and_eq2_in_float32_without_deprecated_calls(graphs, tmp_path, monkeypatch,
                                                                             version):
    trt, _ = fake_tensorrt.install(monkeypatch, version)
    feat = features(trt)
    with pytest.raises(TensorRTError, match="exported with --precision fp16"):
        _build(graphs, tmp_path, "mini-1bg", precision="fp16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _build(graphs, tmp_path, "mini-1bg-fp16", precision="fp16")
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], [str(w.message) for w in caught]
    (build,) = trt.builds
    if feat.strongly_typed:  # 10.12+ and 11: the graph's types decide; BuilderFlag.FP16 is not used
        assert build["strongly_typed"] and "FP16" not in build["flags"] and not build["pinned"]
    else:  # 8.6 and 10.x before 10.12: weakly typed, fp32 layers pinned and the pins obeyed
        assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(build["flags"])
        pinned_types = {kind for _, kind in build["pinned"]}
        assert {"REDUCE", "ELEMENTWISE"} <= pinned_types  # Eq. 2 (and phi) in float32
        assert "CONVOLUTION" not in pinned_types  # the network runs in fp16
        proto = onnx.load(str(graphs["mini-1bg-fp16"]))
        eq2 = {n.name for n in proto.graph.node if n.op_type in ("ReduceMin", "ReduceMax")}
        assert eq2 <= {name for name, _ in build["pinned"]}


@pytest.mark.parametrize("version, api", [("8.6.1", "present"), ("10.3.0", "present"), ("10.13.0", "deprecated"),
                                          ("11.0.0", "absent")])
def test_layer_precision_api_is_each_versions(graphs, monkeypatch, version, api):
    """The fake's ILayer is the bindings': precision/set_output_type plain on 8.6 and 10.3, a DeprecationWarning
    with the bindings' own text on 10.13, absent on 11, where pinning refuses clearly."""
    trt, _ = fake_tensorrt.install(monkeypatch, version)
    network = trt.Builder(None).create_network(network_flags(trt, features(trt)))
    assert trt.OnnxParser(network, None).parse_from_file(str(graphs["mini-1bg-fp16"]))
    types_ = {network.get_layer(i).type for i in range(network.num_layers)}
    assert {trt.LayerType.CONVOLUTION, trt.LayerType.REDUCE, trt.LayerType.CONSTANT} <= types_
    layer = next(network.get_layer(i) for i in range(network.num_layers)
                 if network.get_layer(i).type == trt.LayerType.REDUCE)
    if api == "absent":
        assert not hasattr(layer, "precision") and not hasattr(layer, "set_output_type")
        with pytest.raises(TensorRTError, match="no per-layer precision"):
            pin_float32_layers(trt, network)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer.precision = trt.float32
        layer.set_output_type(0, trt.float32)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    expect = ["Use Deprecated in TensorRT 10.12. Superseded by strong typing. instead."] * 2
    assert messages == (expect if api == "deprecated" else [])


@pytest.mark.parametrize("version", VERSIONS)
def test_engine_gives_torchs_depth_and_names_come_from_the_engine(graphs, tmp_path, monkeypatch, version):
    fake_tensorrt.install(monkeypatch, version)
    engine, _ = _build(graphs, tmp_path, max_batch=4)
    backend = TensorRTBackend(engine)
    assert backend.inputs == ["image", "mask"] and backend.outputs == ["depth"] and backend.max_batch == 4
    assert backend.output_size == (128, 128)
    image, mask = _inputs(3, 128, seed=2)
    got = backend.run(image, mask)
    assert got.dtype == np.float32 and got.shape == (3, 128, 128)
    _close_to_torch(got, _torch_depth(graphs, "mini-1bg", image, mask), mask)  # independent of onnxruntime
    with pytest.raises(TensorRTError, match=r"profile allows 1\.\.4: .*max_objects >= 5"):
        backend.run(np.zeros((5, 3, 128, 128), np.float32), np.zeros((5, 1, 128, 128), np.float32))
    with pytest.raises(TensorRTError, match=r"refused shape \(1, 3, 64, 64\) for 'image'"):
        backend.run(np.zeros((1, 3, 64, 64), np.float32), np.zeros((1, 1, 64, 64), np.float32))
    backend.close()


def _upsampling_graph(path, size=16):
    """image, mask (N, ., S, S) -> depth (N, 2S, 2S): an engine whose output is larger than its input."""
    h = onnx.helper
    nodes = [h.make_node("Mul", ["image", "mask"], ["x"]),
             h.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
             h.make_node("Resize", ["m", "", "scales"], ["r"], mode="nearest"),
             h.make_node("Squeeze", ["r", "one"], ["depth"])]
    graph = h.make_graph(nodes, "up", [h.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["N", 3, size, size]),
                                       h.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, ["N", 1, size, size])],
                         [h.make_tensor_value_info("depth", onnx.TensorProto.FLOAT, ["N", 2 * size, 2 * size])],
                         [onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
                          onnx.numpy_helper.from_array(np.array([1], np.int64), "one")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    spec = {"name": "up", "source": "", "family": "dpt", "input_size": [size, size], "size_multiple": 1,
            "fixed_size": False, "square": False, "mean": [0.5] * 3, "std": [0.5] * 3,
            "output_kind": "metric_depth"}
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps({"network": spec, "input_size": [size, size],
                                                       "precision": "fp32", "max_batch": 4, "opset": 17})
    onnx.save(model, str(path))
    return path


def test_output_buffer_is_sized_from_the_engines_output_shape(tmp_path, monkeypatch):
    """The device buffer of ``depth`` holds what the engine writes for the profile's largest batch, read from the
    engine, not the input's H x W (a real engine would write past a buffer sized that way without a word)."""
    fake_tensorrt.install(monkeypatch, "10.13.0")
    engine, _ = build_engine(_upsampling_graph(tmp_path / "up.onnx"), tmp_path, "fp32", 16, max_batch=4)
    backend = TensorRTBackend(engine)
    assert backend.output_size == (32, 32) and backend.nbytes["depth"] == 4 * 32 * 32 * 4
    image, mask = _inputs(4, 16, seed=3)
    got = backend.run(image, mask)
    want = np.repeat(np.repeat((image * mask).mean(axis=1), 2, axis=1), 2, axis=2)  # numpy, not onnxruntime
    assert got.shape == (4, 32, 32) and np.allclose(got, want, atol=1e-6)
    backend.close()


def test_a_refused_tensor_address_is_an_error(graphs, tmp_path, monkeypatch):
    trt, _ = fake_tensorrt.install(monkeypatch, "10.3.0")
    engine, _ = _build(graphs, tmp_path, max_batch=2)
    real = trt.Runtime(None).deserialize_cuda_engine(engine.read_bytes()).create_execution_context()
    monkeypatch.setattr(type(real), "set_tensor_address", lambda self, name, memory: False)
    with pytest.raises(TensorRTError, match="refused the device buffer of 'image'.*set_tensor_address returned False"):
        TensorRTBackend(engine)


@pytest.mark.parametrize("case", ["corrupt", "other-gpu", "none-after-build"])
def test_a_timing_cache_tensorrt_refuses_never_fails_the_build(graphs, tmp_path, monkeypatch, caplog, case):
    trt, rt = fake_tensorrt.install(monkeypatch, "10.13.0")
    timing = tmp_path / "timing-trt10.13.0-Orin-gpu.cache"  # <version>-<gpu>-<board ("gpu" off a Jetson)>
    if case == "corrupt":  # a truncated or foreign file: create_timing_cache returns None
        timing.write_bytes(b"\x00garbage")
    elif case == "other-gpu":  # a cache of another device: set_timing_cache returns False (ignore_mismatch=False)
        rt.props.name = b"Xavier"
        _build(graphs, tmp_path, engine="first")
        rt.props.name = b"Orin"
        (tmp_path / "timing-trt10.13.0-Xavier-gpu.cache").rename(timing)
    else:  # a TensorRT that keeps no cache: get_timing_cache() is None after the build
        config_class = type(trt.Builder(None).create_builder_config())
        monkeypatch.setattr(config_class, "get_timing_cache", lambda self: None)
    engine, reason = _build(graphs, tmp_path)
    assert engine.is_file() and reason == "no cached engine"
    if case == "none-after-build":
        assert "no timing cache to save" in caplog.text
    else:
        assert "refused timing cache" in caplog.text or "not readable by this TensorRT" in caplog.text
        config = trt.Builder(None).create_builder_config()  # what was written is a cache for this device
        assert config.set_timing_cache(config.create_timing_cache(timing.read_bytes()), False)


@pytest.mark.parametrize("cuda_python", ["12.2.0", "12.9.0"])
def test_cuda_errors_are_named_and_a_missing_driver_is_said_so(graphs, tmp_path, monkeypatch, cuda_python):
    """cuda-python 12.2 (JetPack 6.0: ``from cuda import cudart`` only) raises RuntimeError without a driver,
    12.9 returns cudaErrorInsufficientDriver; both become a TensorRTError that names the driver, and any CUDA
    error is printed by name as NVIDIA's samples do."""
    from bgprompt_core.runtime.build import gpu_present
    from bgprompt_core.runtime.cuda_runtime import cudart

    trt, rt = fake_tensorrt.install(monkeypatch, "8.6.1", cuda_python=cuda_python)
    assert cudart() is rt and rt.__name__ == ("cuda.cudart" if cuda_python == "12.2.0" else "cuda.bindings.runtime")
    engine, _ = _build(graphs, tmp_path, max_batch=2)
    rt.fail["cudaMalloc"] = rt.cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(TensorRTError, match=r"cudaMalloc failed: cudaErrorMemoryAllocation \(2\)"):
        TensorRTBackend(engine)
    rt.fail.clear()
    rt.driver = False
    assert gpu_present() is False
    expect = "Failed to dlopen libcuda.so.1" if cuda_python == "12.2.0" else r"cudaErrorInsufficientDriver \(35\)"
    with pytest.raises(TensorRTError, match=f"{expect}.*no usable NVIDIA driver"):
        _build(graphs, tmp_path, engine="other")


def test_features_per_version():
    expected = {"8.6.1": (True, False, False, 17), "10.3.0": (False, False, False, 20),
                "10.13.0": (False, True, True, 20), "11.0.0": (False, True, False, 20)}
    for version, (explicit, strongly, flag, opset) in expected.items():
        trt = fake_tensorrt.make_tensorrt(version)
        f = features(trt)
        assert (f.explicit_batch_flag, f.strongly_typed, f.strongly_typed_flag, f.max_opset) == (
            explicit, strongly, flag, opset), version
        trt.Builder(None).create_network(network_flags(trt, f))  # every flag we set exists in that version
    eleven = fake_tensorrt.make_tensorrt("11.0.0")
    assert not {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} & set(eleven.BuilderFlag.__members__)
    with pytest.raises(TensorRTError, match="older than 8.6"):
        features(fake_tensorrt.make_tensorrt("8.5.3"))


def test_missing_tensorrt_is_reported_before_the_export(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="needs tensorrt and cuda-python"):
        check_tensorrt_available(installed=lambda pkg: False)
    import bgprompt_core.runtime.export as export

    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: pytest.fail("exported before the check"))
    monkeypatch.setattr("bgprompt_core.runtime.build._installed", lambda pkg: False)
    with pytest.raises(ModelLoadError, match="needs tensorrt"):
        build_runtime(EstimatorConfig(model="mini", backend="tensorrt", cache_dir=str(tmp_path)))


@pytest.mark.parametrize("version", ["8.6.1", "10.13.0"])
def test_estimator_on_a_tensorrt_engine_gives_the_torch_estimators_depth(graphs, tmp_path, monkeypatch, version):
    """The node's route: backend tensorrt with an exported graph (engine built on first start, in cache_dir),
    against the torch backend on the same frame (not against onnxruntime, which the fake engine runs)."""
    fake_tensorrt.install(monkeypatch, version, cuda_python="12.2.0" if version.startswith("8.") else "12.9.0")
    from test_estimator import K, _frame

    img, labels = _frame()
    a = ObjectDepthEstimator(EstimatorConfig(backend="tensorrt", onnx=str(graphs["mini-pnet"]),
                                             cache_dir=str(tmp_path), max_objects=4))
    b = ObjectDepthEstimator(EstimatorConfig(model="mini", prompt="pnet", backend="torch", max_objects=4))
    assert a.model is None and a.spec.name == "mini"
    ra, rb = a.estimate(img, K, labels), b.estimate(img, K, labels)
    assert np.array_equal(ra.valid, rb.valid) and ra.valid.sum() > 1000
    scale = float(rb.depth[rb.valid].std())
    assert np.abs(ra.depth[ra.valid] - rb.depth[rb.valid]).max() <= 1e-3 * scale
    assert [p.name for p in tmp_path.glob("*.engine")] == [engine_name(a.cfg, a.spec) + ".engine"]


# --- the exported graph's cache (issue 26, item 2) ----------------------------------------------------------------
def test_changed_head_weights_of_a_model_dir_re_export_the_graph(tiny_model_dir, tmp_path):
    """The cache key of the exported graph covers every weight: head tensors changed in place in the model
    directory give a new graph whose depth is the new torch model's."""
    import shutil

    from safetensors.torch import load_file, save_file

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    cfg = EstimatorConfig(model=str(model_dir), prompt="none", backend="onnxruntime", cache_dir=str(tmp_path / "c"))
    img = np.full((56, 56, 3), 200, np.uint8)
    img[10:40, 12:44] = np.random.default_rng(0).integers(0, 255, (30, 32, 3))
    mask = np.zeros((56, 56), np.uint8)
    mask[10:40, 12:44] = 1
    K = np.array([[50.0, 0, 27.5], [0, 50.0, 27.5], [0, 0, 1]])
    before = ObjectDepthEstimator(cfg).estimate(img, K, mask)
    weights = load_file(str(model_dir / "model.safetensors"))
    head = [k for k in weights if k.startswith("head.")]
    assert len(head) >= 6
    for k in head:  # 6+ head tensors changed in place; the first tensors of the file are untouched
        weights[k] = weights[k] * 1.5 + 0.01
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    graphs_ = sorted((tmp_path / "c").glob("*.onnx"))
    after = ObjectDepthEstimator(cfg).estimate(img, K, mask)
    torch_after = ObjectDepthEstimator(EstimatorConfig(model=str(model_dir), prompt="none", backend="torch")).estimate(
        img, K, mask)
    assert len(sorted((tmp_path / "c").glob("*.onnx"))) == len(graphs_) + 1  # a new graph, the old one not reused
    valid = after.valid & torch_after.valid & before.valid
    assert valid.sum() > 300
    err = float(np.abs(after.depth[valid] - torch_after.depth[valid]).max())  # float32 rounding
    stale = float(np.abs(before.depth[valid] - torch_after.depth[valid]).max())  # what a reused graph would give
    assert err <= 1e-4 * float(np.abs(torch_after.depth[valid]).max()) and stale > 10 * err, (err, stale)


# --- the torch-free runtime ---------------------------------------------------------------------------------------
TORCH_FREE = r"""
import json, sys
import numpy as np
import rclpy
from rclpy.parameter import Parameter
from bgprompt_ros.node import ObjectDepthNode

rclpy.init()
node = ObjectDepthNode(parameter_overrides=[Parameter("backend", value=sys.argv[1]),
                                            Parameter("onnx", value=sys.argv[2])])
node.trigger_configure()
state = node._state_machine.current_state[1]
img = np.full((96, 128, 3), 240, np.uint8)
img[30:70, 40:90] = np.random.default_rng(0).integers(0, 255, (40, 50, 3))
mask = np.zeros((96, 128), np.uint8)
mask[30:70, 40:90] = 1
K = np.array([[120.0, 0, 63.5], [0, 120.0, 47.5], [0, 0, 1]])
res = node.estimator.estimate(img, K, mask)
print(json.dumps({"state": state, "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules,
                  "depth": np.nan_to_num(res.depth).tolist()}))
node.destroy_node()
rclpy.shutdown()
"""


@pytest.mark.ros
def test_node_with_an_exported_graph_imports_neither_torch_nor_transformers(graphs):
    """After configure (and a frame) the node's process holds no torch and no transformers; its depth is the
    torch model's."""
    import subprocess
    import sys

    pytest.importorskip("rclpy")
    run = subprocess.run([sys.executable, "-c", TORCH_FREE, "onnxruntime", str(graphs["mini-pnet"])],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["state"] == "inactive" and not out["torch"] and not out["transformers"]
    # the same frame through the torch backend, in this process
    img = np.full((96, 128, 3), 240, np.uint8)
    img[30:70, 40:90] = np.random.default_rng(0).integers(0, 255, (40, 50, 3))
    mask = np.zeros((96, 128), np.uint8)
    mask[30:70, 40:90] = 1
    K = np.array([[120.0, 0, 63.5], [0, 120.0, 47.5], [0, 0, 1]])
    ref = ObjectDepthEstimator(EstimatorConfig(model="mini", prompt="pnet", backend="torch")).estimate(img, K, mask)
    got = np.array(out["depth"], np.float32)
    assert np.allclose(got, np.nan_to_num(ref.depth), rtol=2e-3, atol=1e-3) and ref.valid.sum() > 1000


# --- tools/gpu-check without a GPU --------------------------------------------------------------------------------
def test_gpu_check_runs_every_step_against_the_fake(graphs, tmp_path, monkeypatch, capsys):
    """The tool's build / run / compare / time / summary steps, on the fake TensorRT (its timings mean nothing)."""
    import importlib.machinery
    import importlib.util
    import shutil
    from pathlib import Path

    tool = Path(__file__).resolve().parents[2] / "tools" / "gpu-check"
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(tool))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    gpu_check = importlib.util.module_from_spec(spec)
    loader.exec_module(gpu_check)
    src = tmp_path / "graphs"
    src.mkdir()
    shutil.copy(graphs["mini-1bg"], src / "mini-1bg-fp32.onnx")
    shutil.copy(graphs["mini-1bg-fp16"], src / "mini-1bg-fp16.onnx")
    gpu_check.export_bare(graphs.model("mini-1bg"), src / "bare-mini-fp32.onnx", 128, 4, False)
    fake_tensorrt.install(monkeypatch, "10.13.0")
    assert gpu_check.main(["--graphs", str(src), "--out", str(tmp_path / "out"), "--iters", "2", "--batch", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("gpu-check OK: 2 engines on TensorRT 10.13.0, Orin") and "fp32" in line and "vs bare" in line
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert len(report["rows"]) == 3 and all(r["ok"] for r in report["rows"]) and not report["failed"]
    assert max(r["rel_error"] for r in report["rows"] if r["precision"] == "fp32") < 1e-5  # fake: onnxruntime itself
