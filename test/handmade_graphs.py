"""Tests only: ONNX graphs written with onnx.helper, in milliseconds and without torch: a bgprompt graph with the
exported contract (onnx_graph.py) and a U-2-Net-style rembg model."""
from __future__ import annotations

import json

from bgprompt_core.networks.spec import DepthNetSpec


def _save(graph, path, metadata: dict | None = None):
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_graph(path, hw=(128, 128), meta_hw=None):
    """A bgprompt graph: inputs image (N, 3, H, W) / mask (N, 1, H, W), output depth (N, H, W) = 1 + the image's
    channel mean, with metadata claiming ``meta_hw`` (default: the truth)."""
    from onnx import TensorProto, helper

    h, w = hw
    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Add", ["m", "one"], ["depth"])]
    graph = helper.make_graph(
        nodes, "bgprompt-test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, h, w]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, h, w])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, ["N", h, w])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    mh, mw = meta_hw or hw
    spec = DepthNetSpec("hand-made", "", "dpt", (mh, mw), 1, output_kind="relative_depth")
    meta = {"bgprompt_format": 1, "network": spec.to_dict(), "input_size": [mh, mw], "precision": "fp32",
            "prompt": None, "max_batch": 4}
    return _save(graph, path, {"bgprompt": json.dumps(meta)})


def write_dark_segmenter(path):
    """A rembg-style model (input (1, 3, 320, 320) normalised RGB -> (1, 1, 320, 320)): foreground = dark pixels."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Neg", ["m"], ["output"])]
    graph = helper.make_graph(nodes, "dark",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 320, 320])])
    return _save(graph, path)
