"""The exported graphs shipped for the torch-free robot default (runtime.SHIPPED_GRAPHS): fresh against the
shipped weights, equal to what the current code computes from them, and picked by `backend: auto`.

Regenerate them with `make graphs` (`bgprompt export`); these tests say when that is due.
"""
import json
import logging
import shutil

import numpy as np
import pytest

from bgprompt_core.runtime import build as runtime
from bgprompt_core.runtime.onnxruntime_backend import OnnxRuntimeBackend
from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator
from bgprompt_core.runtime.graph_contract import read_onnx_metadata
from bgprompt_core.runtime.build import (SHIPPED_GRAPHS, SHIPPED_PROMPTS, ModelLoadError, StaleGraphError, build_model,
                                   build_runtime, check_shipped_graph)
from bgprompt_core.runtime.torch_backend import TorchBackend
from scenes import box_on_table, table_image

KINDS = sorted(SHIPPED_GRAPHS["mini"])


def tabletop_batch(size: int = 128):
    """Two objects as the estimator feeds them: a grey and a see-through box on a checkered table, cut to the
    network's input (image (2, 3, S, S) in [0, 1], mask (2, 1, S, S))."""
    f = 1.1 * size
    K = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]])
    images, masks = [], []
    for glass, half in ((False, (0.05, 0.06, 0.04)), (True, (0.07, 0.04, 0.05))):
        depth, table, box = box_on_table(K, size, size, half=half)
        images.append(table_image(K, size, size, table, box, glass).transpose(2, 0, 1) / 255.0)
        masks.append(box[None].astype(np.float32))
    return np.stack(images).astype(np.float32), np.stack(masks)


def tolerance(reference: np.ndarray, mask: np.ndarray) -> float:
    """1e-4 of the output's range over the objects: float32 reorderings give ~1e-6 of it, a changed prompt or
    network weight ~1e-1."""
    inside = reference[mask[:, 0] > 0.5]
    return 1e-4 * float(np.ptp(inside))


def test_shipped_graphs_are_small_fresh_and_described():
    for kind, graph in SHIPPED_GRAPHS["mini"].items():
        assert graph.stat().st_size < 20 * 2**20, f"{graph} is over the 20 MB the repository allows"
        check_shipped_graph(graph)  # the graph and the weights it was exported from have the recorded digests
        meta = read_onnx_metadata(graph)
        assert meta["network"]["name"] == "mini" and meta["precision"] == "fp32" and meta["opset"] == 17
        assert meta["input_size"] == [128, 128] and meta["prompt"]["type"] == "fourier"
        digests = graph.with_name(graph.name + ".sha256").read_text()
        assert SHIPPED_PROMPTS["mini"][kind].name in digests and "models/mini/model.safetensors" in digests


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_graph_computes_what_the_torch_model_of_the_shipped_weights_computes(kind):
    image, mask = tabletop_batch()
    model = build_model(EstimatorConfig(model="mini", prompt=kind))
    want = TorchBackend(model, "cpu", "fp32").run(image, mask)
    got = OnnxRuntimeBackend(SHIPPED_GRAPHS["mini"][kind]).run(image, mask)
    inside = mask[:, 0] > 0.5
    assert np.isfinite(want[inside]).all() and np.ptp(want[inside]) > 0
    assert np.abs(got - want)[inside].max() <= tolerance(want, mask)
    # the two shipped prompts differ: a graph of the other prompt would fail the bound by far
    other = OnnxRuntimeBackend(SHIPPED_GRAPHS["mini"][next(k for k in KINDS if k != kind)]).run(image, mask)
    assert np.abs(other - want)[inside].max() > 100 * tolerance(want, mask)


@pytest.mark.slow
def test_shipped_1bg_graph_equals_a_fresh_export_by_the_current_code(tmp_path):
    """~1 min: `bgprompt export`'s code, run now on the shipped weights, gives the shipped graph's outputs."""
    from bgprompt_core.runtime.export import export_onnx

    fresh = export_onnx(build_model(EstimatorConfig(model="mini", prompt="1bg")), tmp_path / "fresh.onnx", 128)
    assert read_onnx_metadata(fresh) == read_onnx_metadata(SHIPPED_GRAPHS["mini"]["1bg"])
    image, mask = tabletop_batch()
    want = OnnxRuntimeBackend(fresh).run(image, mask)
    got = OnnxRuntimeBackend(SHIPPED_GRAPHS["mini"]["1bg"]).run(image, mask)
    assert np.abs(got - want)[mask[:, 0] > 0.5].max() <= tolerance(want, mask)


def test_backend_auto_runs_the_shipped_graph_for_the_shipped_prompts_only():
    for prompt in ("1bg", "default", "tabletop"):
        backend, spec, model = build_runtime(EstimatorConfig(model="mini", prompt=prompt, backend="auto"))
        kind = "1bg" if prompt == "default" else prompt
        assert isinstance(backend, OnnxRuntimeBackend) and backend.path == SHIPPED_GRAPHS["mini"][kind]
        assert model is None and spec.name == "mini"
    # backend torch, or fp16 (the shipped graphs are fp32), never take the shipped graph
    assert isinstance(build_runtime(EstimatorConfig(model="mini", backend="torch"))[0], TorchBackend)
    assert runtime.shipped_graph(EstimatorConfig(model="mini", precision="fp16")) is None
    assert runtime.shipped_graph(EstimatorConfig(model="mini", prompt="pnet")) is None
    assert runtime.shipped_graph(EstimatorConfig(model="mini", prompt="none")) is None


def test_the_shipped_graph_estimates_like_the_torch_backend_on_a_full_frame():
    h, w = 240, 320
    K = np.array([[260.0, 0, 159.5], [0, 260.0, 119.5], [0, 0, 1]])
    _, table, box = box_on_table(K, h, w)
    img = table_image(K, h, w, table, box, glass=True)
    labels = box.astype(np.uint8)
    got = ObjectDepthEstimator(EstimatorConfig(model="mini", backend="auto")).estimate(img, K, labels)
    want = ObjectDepthEstimator(EstimatorConfig(model="mini", backend="torch")).estimate(img, K, labels)
    assert np.array_equal(got.valid, want.valid) and got.valid[box].mean() > 0.8
    assert np.isnan(got.depth[~box]).all()
    d = want.depth[want.valid]
    assert np.abs(got.depth[got.valid] - d).max() <= 1e-4 * np.ptp(d)


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """bgprompt_core's shipped files copied to tmp_path, with runtime pointed at the copy."""
    for rel in ("graphs", "models/mini", "prompts"):
        shutil.copytree(runtime.PACKAGE_ROOT / rel, tmp_path / rel)
    monkeypatch.setattr(runtime, "PACKAGE_ROOT", tmp_path)
    monkeypatch.setattr(runtime, "SHIPPED_GRAPHS", {"mini": {k: tmp_path / "graphs" / p.name
                                                             for k, p in SHIPPED_GRAPHS["mini"].items()}})
    return tmp_path


@pytest.mark.parametrize("damage", ["retrained prompt", "retrained network", "truncated graph", "lfs pointer",
                                    "no digest file"])
def test_a_stale_or_damaged_shipped_graph_is_refused_by_name(package_copy, damage):
    graph = package_copy / "graphs" / "mini-1bg.onnx"
    if damage == "retrained prompt":
        with open(package_copy / "prompts" / "mini-1bg.safetensors", "r+b") as f:
            f.seek(-4, 2)
            f.write(b"\x00\x00\x80\x3f")
    elif damage == "retrained network":
        (package_copy / "models/mini/config.json").write_text("{}")
    elif damage == "truncated graph":
        graph.write_bytes(graph.read_bytes()[:1000])
    elif damage == "lfs pointer":
        graph.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 6029031\n")
    else:
        graph.with_name(graph.name + ".sha256").unlink()
    with pytest.raises(StaleGraphError, match="make graphs"):
        check_shipped_graph(graph)


def test_a_stale_graph_falls_back_to_the_weights_with_torch_and_fails_loudly_without(package_copy, monkeypatch,
                                                                                      caplog, tmp_path):
    (package_copy / "prompts" / "mini-1bg.safetensors").write_bytes(b"retrained")
    cfg = EstimatorConfig(model="mini", backend="onnxruntime", cache_dir=str(tmp_path / "cache"))

    class TorchRoute(Exception):
        pass

    def build_model(cfg):
        raise TorchRoute

    monkeypatch.setattr(runtime, "build_model", build_model)
    with caplog.at_level(logging.ERROR, "bgprompt.runtime"):
        with pytest.raises(TorchRoute):  # the weights are loaded (and exported) instead of the stale graph
            build_runtime(cfg)
    assert "is stale" in caplog.text and "exporting from the shipped weights" in caplog.text
    monkeypatch.setattr(runtime, "_installed", lambda pkg: pkg != "torch")
    with pytest.raises(StaleGraphError, match="prompts/mini-1bg.safetensors"):
        build_runtime(cfg)


def test_without_torch_a_model_with_no_graph_names_the_export_step(monkeypatch):
    monkeypatch.setattr(runtime, "_installed", lambda pkg: pkg != "torch")
    with pytest.raises(ModelLoadError, match=r"bgprompt export --model mini --prompt pnet .*set onnx"):
        build_runtime(EstimatorConfig(model="mini", prompt="pnet", backend="auto"))
    with pytest.raises(ModelLoadError, match=r"backend torch needs torch"):
        build_runtime(EstimatorConfig(model="mini", backend="torch"))
    monkeypatch.setattr(runtime, "_installed", lambda pkg: False)  # e.g. apt's python3 without the venv
    with pytest.raises(ModelLoadError, match=r"neither onnxruntime nor torch can be imported by .*activate the venv"):
        build_runtime(EstimatorConfig(model="mini", backend="auto"))


def test_the_node_defaults_run_the_shipped_graph():
    """The node's and `bag eval`'s parameters, untouched, give the torch-free route."""
    from bgprompt_ros.params import PARAMETERS, estimator_config_from_params, read_params_file

    cfg = estimator_config_from_params({})
    assert PARAMETERS["backend"][0] == "auto" and runtime.shipped_graph(cfg) == SHIPPED_GRAPHS["mini"]["1bg"]
    from_yaml = estimator_config_from_params(read_params_file(runtime.PACKAGE_ROOT.parent / "config" /
                                                              "object_depth.yaml"))
    backend, _, model = build_runtime(from_yaml)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.path == SHIPPED_GRAPHS["mini"]["1bg"] and model is None


def test_shipped_files_name_the_model_by_package_not_by_the_builders_path():
    """CI checks out elsewhere than the machine that built the files: a recorded absolute path made a graph
    exported there differ from the shipped one, and named a directory no robot has."""
    from safetensors import safe_open

    from bgprompt_core.networks.spec import PACKAGE_MODELS, REGISTRY, DepthNetSpec

    records = [read_onnx_metadata(graph)["network"] for graph in SHIPPED_GRAPHS["mini"].values()]
    for prompt in SHIPPED_PROMPTS["mini"].values():
        with safe_open(str(prompt), framework="np") as f:
            records.append(json.loads(f.metadata()["bgprompt"])["network"])
    assert {r["source"] for r in records} == {"package:models/mini"}
    assert DepthNetSpec.from_dict(records[0]) == REGISTRY["mini"]
    assert DepthNetSpec.from_dict(records[0]).source == str(PACKAGE_MODELS / "mini")
