"""The exported graph's contract, readable without torch: tensor names, opset, and its bgprompt metadata.

The graph (export.DeployGraph) takes ``image`` (N, 3, H, W) float32 in [0, 1] and ``mask`` (N, 1, H, W)
float32 and returns ``depth`` (N, H, W) float32: the prompt (Eq. 1), the network's normalization phi and
Eq. 2 are inside it. Its metadata (key ``bgprompt``) carries the network's ``DepthNetSpec``, so a runtime
that loads the graph knows the input size and output kind without torch or transformers.
"""
from __future__ import annotations

import json
from pathlib import Path

from bgprompt_core.errors import GraphError

INPUTS, OUTPUT = ("image", "mask"), "depth"
# TensorRT 8.6 (JetPack 6.0) imports ONNX up to opset 17; 10.x up to 20 (onnx-tensorrt docs/operators.md).
# Opset 17 also keeps ReduceMin/ReduceMax's axes an attribute: 8.6 ignores the opset-18 ``axes`` input and
# would reduce Eq. 2's per-object min/max over the whole batch.
DEFAULT_OPSET = 17
METADATA_KEY = "bgprompt"



def parse_metadata(value: str | None, path: str | Path) -> dict:
    if value is None:
        raise GraphError(f"{path}: ONNX model without bgprompt metadata (export it with `bgprompt export`)")
    try:
        meta = json.loads(value)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise GraphError(f"{path}: corrupt bgprompt metadata ({type(exc).__name__}); re-export with "
                         f"`bgprompt export`") from exc
    if not isinstance(meta, dict) or "network" not in meta or "input_size" not in meta:
        raise GraphError(f"{path}: bgprompt metadata lacks the network spec (exported by an old version?); "
                         f"re-export with `bgprompt export`")
    return meta


def read_onnx_metadata(path: str | Path) -> dict:
    """The graph's bgprompt metadata (``onnx`` reads only the graph proto, never external weight files)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise GraphError(f"ONNX model not found: {path} (create it with `bgprompt export`)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: a truncated or foreign file
        raise GraphError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    value = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)
    meta = parse_metadata(value, path)
    check_graph_inputs(meta, {i.name: [d.dim_value if d.HasField("dim_value") else d.dim_param
                                       for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}, path)
    return meta


def check_graph_inputs(meta: dict, shapes: dict[str, list], path: str | Path) -> None:
    """Refuse metadata that disagrees with the graph's own inputs (``shapes``: name -> dims, a dim an int or a
    symbol): runtimes size every frame's buffers from the metadata, so 8192x8192 metadata on a 128x128 graph
    would allocate gigabytes per frame before the graph refuses them."""
    size, net = meta.get("input_size"), meta.get("network")
    net_size = net.get("input_size") if isinstance(net, dict) else None
    ok = lambda s: isinstance(s, (list, tuple)) and len(s) == 2 and all(  # noqa: E731
        isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 16384 for v in s)
    if not ok(size) or not ok(net_size):
        raise GraphError(f"{path}: metadata input sizes {size!r} / network {net_size!r} are not two positive "
                         f"integers; re-export with `bgprompt export`")
    problems = []
    for name, channels in zip(INPUTS, (3, 1)):
        dims = shapes.get(name)
        if dims is None or len(dims) != 4:
            problems.append(f"input {name!r} has shape {dims}, expected (N, {channels}, H, W)")
            continue
        fixed = [(i, d) for i, d in enumerate(dims[1:], 1) if isinstance(d, int) and d > 0]
        want = (channels, *size)
        problems += [f"input {name!r} has {'CHW'[i - 1]} = {d}, the metadata says {want[i - 1]}"
                     for i, d in fixed if d != want[i - 1]]
    if tuple(net_size) != tuple(size):
        problems.append(f"the network spec's input size {net_size} differs from the graph's {size}")
    if problems:
        raise GraphError(f"{path}: the graph's metadata does not match the graph ({'; '.join(problems)}); it was "
                         f"edited or corrupted: re-export with `bgprompt export`")


def opset_of(proto) -> int:
    """The default-domain opset an ONNX ModelProto was written for."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def graph_opset(path: str | Path) -> int:
    """The default-domain opset of the graph file at ``path``."""
    import onnx

    return opset_of(onnx.load(str(path), load_external_data=False))


def _subgraphs(graph):
    """``graph`` and every graph nested in its nodes' attributes (If / Loop / Scan bodies)."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _subgraphs(g)


def split_shape_slices(proto) -> int:
    """Rewrite each ``Shape(start, end)`` as ``Shape`` + ``Slice`` with constant starts/ends/axes; returns how many.

    Opset 15 gave Shape ``start``/``end``; TensorRT 8.6's importer ignores them (onnx-tensorrt release/8.6-GA
    builtin_op_importers.cpp:4434-4440) and returns the whole shape, so ``Resize`` sizes and ``Expand`` shapes get
    the wrong rank. Slice clamps and wraps negative indices exactly as Shape does, so the graph computes the same.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    count = 0
    for graph in _subgraphs(proto.graph):
        nodes, used = [], {v for n in graph.node for v in (*n.input, *n.output)} | {i.name for i in graph.initializer}
        for node in graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type != "Shape" or node.domain not in ("", "ai.onnx") or not ({"start", "end"} & attrs.keys()):
                nodes.append(node)
                continue
            count += 1
            base = f"{node.name or node.output[0]}_bgprompt_slice"
            names = [f"{base}_{k}" for k in ("full", "starts", "ends", "axes")]
            assert not set(names) & used, names
            bounds = (attrs.get("start", 0), attrs.get("end", np.iinfo(np.int64).max))
            for name, value in zip(names[1:], (*bounds, 0)):
                graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
            nodes.append(helper.make_node("Shape", [node.input[0]], [names[0]], name=f"{base}_shape"))
            nodes.append(helper.make_node("Slice", [names[0], *names[1:]], list(node.output), name=base))
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def tensorrt_blockers(proto) -> list[str]:
    """What the TensorRT parsers refuse or misread in an exported graph (see split_shape_slices and
    weight_folding): training-mode or multi-output BatchNormalization, Shape with start/end."""
    from onnx import helper

    out = []
    for graph in _subgraphs(proto.graph):
        for node in graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "BatchNormalization" and (attrs.get("training_mode", 0) == 1 or len(node.output) > 1):
                out.append(f"{node.name}: training-mode BatchNormalization (TensorRT 8.6 and 10.x refuse it)")
            if node.op_type == "Shape" and {"start", "end"} & attrs.keys():
                out.append(f"{node.name}: Shape with start/end (TensorRT 8.6 ignores them)")
    return out
