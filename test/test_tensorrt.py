"""The TensorRT deployment path without a GPU: the exported graph checked statically and with onnxruntime, and
the TensorRT calls made against a fake ``tensorrt`` per version (fake_tensorrt.py says what each one models)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import fake_tensorrt
from bgprompt_core.estimator import EstimatorConfig, ObjectDepthEstimator
from bgprompt_core.export import export_onnx
from bgprompt_core.onnx_graph import DEFAULT_OPSET, opset_of, read_onnx_metadata
from bgprompt_core.runtime import ModelLoadError, build_model, build_runtime, check_tensorrt_available, engine_name
from bgprompt_core.tensorrt_backend import (TensorRTBackend, TensorRTError, build_engine, network_flags,
                                            features, rebuild_reason)

OPS = fake_tensorrt.OPS
VERSIONS = fake_tensorrt.VERSIONS
MAX_OBJECTS = 16


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The shipped mini network exported with its 1-BG (fp32 and fp16) and PNet prompts, and a tiny Depth Anything
    whose Eq. 2 takes min/max over the object (``--eq2-range object``), all for batches 1..16."""
    from bgprompt_core.depth_networks import build_depth_net
    from bgprompt_core.config import DepthTransformConfig
    from bgprompt_core.model import PromptedDepth
    from tiny_models import small_config

    root = tmp_path_factory.mktemp("graphs")
    out = {}
    for name, prompt, half in (("1bg", "1bg", False), ("1bg-fp16", "1bg", True), ("pnet", "pnet", False)):
        model = build_model(EstimatorConfig(model="mini", prompt=prompt))
        out[name] = export_onnx(model, root / f"mini-{name}.onnx", 128, max_batch=MAX_OBJECTS, half=half)
    torch.manual_seed(0)
    cfg, spec, _ = small_config("depth_anything")
    net = build_depth_net(cfg, spec)
    with torch.no_grad():  # condition the random disparity head for Eq. 2 (see test_estimator)
        net.model.head.conv3.weight.mul_(1e4)
        net.model.head.conv3.bias.fill_(1.0)
    model = PromptedDepth(net, None, transform=DepthTransformConfig(range="object")).eval()
    out["object-range"] = export_onnx(model, root / "tiny-object.onnx", 56, max_batch=MAX_OBJECTS)
    out["object-range-model"] = model
    return out


# --- static checks of the exported graph ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["1bg", "1bg-fp16", "pnet", "object-range"])
def test_exported_ops_are_within_every_tensorrt_versions_importers(graphs, name):
    proto = onnx.load(str(graphs[name]))
    ops = {n.op_type for n in proto.graph.node}
    opset = opset_of(proto)
    assert opset == DEFAULT_OPSET == 17
    assert not ops & {"DFT", "STFT"}  # TensorRT has no DFT importer: PNet uses matrix DFTs
    for version in ("8.6", "10"):
        assert opset <= OPS[version]["max_opset"]
        assert ops <= set(OPS[version]["supported"]), (version, sorted(ops - set(OPS[version]["supported"])))
    # opset 17: axes is an attribute (8.6 ignores an opset-18 axes input and would reduce over the whole batch)
    for n in (n for n in proto.graph.node if n.op_type.startswith("Reduce")):
        assert len(n.input) == 1 and any(a.name == "axes" for a in n.attribute), onnx.helper.printable_node(n)
    eq2 = [n for n in proto.graph.node if n.op_type in ("ReduceMin", "ReduceMax")]
    assert len(eq2) == 2 and all([list(a.ints) for a in n.attribute if a.name == "axes"] == [[1]] for n in eq2)
    meta = read_onnx_metadata(graphs[name])
    assert meta["opset"] == 17 and meta["max_batch"] == MAX_OBJECTS


@pytest.mark.parametrize("name", ["1bg", "pnet", "object-range"])
def test_each_objects_depth_is_the_same_alone_and_in_a_full_batch(graphs, name):
    """Eq. 2 normalises per object: an object's depth must not depend on the other objects of its batch."""
    size = 56 if name == "object-range" else 128
    rng = np.random.default_rng(1)
    image = rng.random((MAX_OBJECTS, 3, size, size), dtype=np.float32)
    mask = np.zeros((MAX_OBJECTS, 1, size, size), np.float32)
    for k in range(MAX_OBJECTS):
        y, x = rng.integers(0, size // 2, 2)
        mask[k, 0, y:y + size // 3, x:x + size // 3] = 1
    session = ort.InferenceSession(str(graphs[name]), providers=["CPUExecutionProvider"])
    batch = session.run(["depth"], {"image": image, "mask": mask})[0]
    spread = []
    for k in (0, 7, MAX_OBJECTS - 1):
        alone = session.run(["depth"], {"image": image[k:k + 1], "mask": mask[k:k + 1]})[0][0]
        assert np.allclose(alone, batch[k], rtol=1e-5, atol=1e-6), float(np.abs(alone - batch[k]).max())
        spread.append(float(batch[k].max() - batch[k].min()))
    assert min(spread) > 0.1  # non-trivial depth maps were compared
    if name == "object-range":  # and the ONNX graph is the torch model
        with torch.no_grad():
            ref = graphs["object-range-model"](torch.from_numpy(image), torch.from_numpy(mask))["depth"].numpy()
        assert np.allclose(batch, ref, rtol=2e-3, atol=1e-4)


def test_export_refuses_an_opset_it_could_not_write(graphs, tmp_path, monkeypatch):
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
    from bgprompt_core.onnx_graph import GraphError

    with pytest.raises(GraphError, match="could not write opset 17"):
        export_onnx(model, tmp_path / "m.onnx", 128)
    assert not list(tmp_path.iterdir())  # atomic: nothing half-written is left


# --- the TensorRT calls, per version ------------------------------------------------------------------------
def _build(graphs, tmp_path, graph="1bg", precision="fp32", max_batch=MAX_OBJECTS, engine="mini-1bg"):
    return build_engine(graphs[graph], tmp_path, precision, 128, max_batch=max_batch, name=engine)


@pytest.mark.parametrize("version", VERSIONS)
def test_network_flags_profiles_and_one_build_reused_across_two_starts(graphs, tmp_path, monkeypatch, version):
    trt, _ = fake_tensorrt.install(monkeypatch, version)
    flags = trt.NetworkDefinitionCreationFlag
    if version.startswith("8."):  # the fake refuses what the real 8.6 refuses: an implicit-batch network
        parser = trt.OnnxParser(trt.Builder(None).create_network(0), None)
        assert not parser.parse_from_file(str(graphs["1bg"])) and "explicit" in str(parser.get_error(0))
    engine, reason = _build(graphs, tmp_path)
    assert reason == "no cached engine" and engine.name == "mini-1bg.engine"
    (build,) = trt.builds
    bits = build["network_flags"]
    explicit = 1 << int(flags.EXPLICIT_BATCH) if hasattr(flags, "EXPLICIT_BATCH") else 0
    strongly = 1 << int(flags.STRONGLY_TYPED) if hasattr(flags, "STRONGLY_TYPED") else 0
    major, minor = (int(x) for x in version.split(".")[:2])
    assert bool(bits & explicit) == (major < 10)  # 8.6 needs it; 10.x deprecates it
    assert bool(bits & strongly) == ((major, minor) >= (10, 12))
    assert build["profile"] == {"image": ((1, 3, 128, 128), (2, 3, 128, 128), (MAX_OBJECTS, 3, 128, 128)),
                                "mask": ((1, 1, 128, 128), (2, 1, 128, 128), (MAX_OBJECTS, 1, 128, 128))}
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
    _, reason = _build(graphs, tmp_path, "pnet")  # another graph under the same engine name
    assert "onnx_sha256" in reason
    assert [p.name for p in tmp_path.glob("*.engine")] == ["mini-1bg.engine"] and len(trt.builds) == 4
    meta = json.loads((tmp_path / "mini-1bg.json").read_text())
    assert rebuild_reason(tmp_path / "mini-1bg.json", meta["key"]) is None
    assert meta["key"]["tensorrt"] == version and meta["graph"]["prompt"]["type"] == "pnet"


@pytest.mark.parametrize("version", VERSIONS)
def test_fp16_keeps_normalisation_and_eq2_in_float32(graphs, tmp_path, monkeypatch, version):
    trt, _ = fake_tensorrt.install(monkeypatch, version)
    feat = features(trt)
    with pytest.raises(TensorRTError, match="exported with --precision fp16"):
        _build(graphs, tmp_path, "1bg", precision="fp16")
    _build(graphs, tmp_path, "1bg-fp16", precision="fp16")
    (build,) = trt.builds
    if feat.strongly_typed:  # 10.12+ and 11: the graph's types decide; BuilderFlag.FP16 is not used
        assert build["strongly_typed"] and "FP16" not in build["flags"] and not build["pinned"]
    else:  # 8.6 and 10.x before 10.12: weakly typed, fp32 layers pinned and the pins obeyed
        assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(build["flags"])
        pinned_ops = {op for _, op in build["pinned"]}
        assert {"ReduceMin", "ReduceMax", "Div", "Sub"} <= pinned_ops  # Eq. 2 (and phi) in float32
        proto = onnx.load(str(graphs["1bg-fp16"]))
        convs = [n for n in proto.graph.node if n.op_type == "Conv"]
        assert convs and not {n.name for n in convs} & {name for name, _ in build["pinned"]}  # network: fp16
    assert not any("deprecated" in line for line in trt.log)


@pytest.mark.parametrize("version", VERSIONS)
def test_engine_runs_like_onnxruntime_and_names_come_from_the_engine(graphs, tmp_path, monkeypatch, version):
    fake_tensorrt.install(monkeypatch, version)
    engine, _ = _build(graphs, tmp_path, max_batch=4)
    backend = TensorRTBackend(engine)
    assert backend.inputs == ["image", "mask"] and backend.outputs == ["depth"] and backend.max_batch == 4
    rng = np.random.default_rng(0)
    image = rng.random((3, 3, 128, 128), dtype=np.float32)
    mask = np.zeros((3, 1, 128, 128), np.float32)
    mask[:, :, 30:90, 40:100] = 1
    got = backend.run(image, mask)
    want = ort.InferenceSession(str(graphs["1bg"]), providers=["CPUExecutionProvider"]).run(
        ["depth"], {"image": image, "mask": mask})[0]
    assert got.dtype == np.float32 and np.array_equal(got, want) and want.std() > 0.1
    with pytest.raises(TensorRTError, match=r"profile allows 1\.\.4: .*max_objects >= 5"):
        backend.run(np.zeros((5, 3, 128, 128), np.float32), np.zeros((5, 1, 128, 128), np.float32))
    with pytest.raises(TensorRTError, match=r"refused shape \(1, 3, 64, 64\) for 'image'"):
        backend.run(np.zeros((1, 3, 64, 64), np.float32), np.zeros((1, 1, 64, 64), np.float32))
    backend.close()


def test_graph_errors_are_clear_before_anything_slow(graphs, tmp_path, monkeypatch):
    trt, _ = fake_tensorrt.install(monkeypatch, "8.6.1")
    model = build_model(EstimatorConfig(model="mini", prompt="1bg"))
    opset18 = export_onnx(model, tmp_path / "o18.onnx", 128, opset=18)
    with pytest.raises(TensorRTError, match="opset 18; TensorRT 8.6.1 reads up to 17: re-export .*--opset 17"):
        build_engine(opset18, tmp_path, "fp32", 128)
    dft = tmp_path / "dft.onnx"  # a graph with an operator TensorRT has no importer for
    proto = onnx.load(str(graphs["1bg"]))
    proto.graph.node.append(onnx.helper.make_node("DFT", ["image"], ["spectrum"]))
    onnx.save(proto, str(dft))
    with pytest.raises(TensorRTError, match="could not parse .*No importer registered for op: DFT"):
        build_engine(dft, tmp_path, "fp32", 128)
    assert not trt.builds and not list(tmp_path.glob("*.engine"))


def test_missing_tensorrt_is_reported_before_the_export(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="needs tensorrt and cuda-python"):
        check_tensorrt_available(installed=lambda pkg: False)
    import bgprompt_core.export as export

    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: pytest.fail("exported before the check"))
    monkeypatch.setattr("bgprompt_core.runtime._installed", lambda pkg: False)
    with pytest.raises(ModelLoadError, match="needs tensorrt"):
        build_runtime(EstimatorConfig(model="mini", backend="tensorrt", cache_dir=str(tmp_path)))


@pytest.mark.parametrize("version", ["8.6.1", "10.13.0"])
def test_estimator_on_a_tensorrt_engine_equals_onnxruntime(graphs, tmp_path, monkeypatch, version):
    """The node's route: backend tensorrt with an exported graph (engine built on first start, in cache_dir)."""
    fake_tensorrt.install(monkeypatch, version)
    from test_estimator import K, _frame

    img, labels = _frame()
    common = dict(onnx=str(graphs["pnet"]), cache_dir=str(tmp_path), max_objects=4)
    a = ObjectDepthEstimator(EstimatorConfig(backend="tensorrt", **common))
    b = ObjectDepthEstimator(EstimatorConfig(backend="onnxruntime", **common))
    assert a.model is None and a.spec.name == "mini"
    ra, rb = a.estimate(img, K, labels), b.estimate(img, K, labels)
    assert np.array_equal(ra.valid, rb.valid) and np.array_equal(ra.depth[ra.valid], rb.depth[rb.valid])
    assert [p.name for p in tmp_path.glob("*.engine")] == [engine_name(a.cfg, a.spec) + ".engine"]


def test_features_per_version(monkeypatch):
    expected = {"8.6.1": (True, False, 17), "10.3.0": (False, False, 20), "10.13.0": (False, True, 20),
                "11.0.0": (False, True, 20)}
    for version, (explicit, strongly, opset) in expected.items():
        trt = fake_tensorrt.make_tensorrt(version)
        f = features(trt)
        assert (f.explicit_batch_flag, f.strongly_typed, f.max_opset) == (explicit, strongly, opset)
        trt.Builder(None).create_network(network_flags(trt, f))  # every flag we set exists in that version
    with pytest.raises(TensorRTError, match="older than 8.6"):
        features(fake_tensorrt.make_tensorrt("8.5.3"))


# --- the torch-free runtime ---------------------------------------------------------------------------------
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
    run = subprocess.run([sys.executable, "-c", TORCH_FREE, "onnxruntime", str(graphs["pnet"])], capture_output=True,
                         text=True, timeout=300)
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
