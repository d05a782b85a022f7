"""The ONNX export of the deployable graph (``method.deployable.DeployGraph``; contract: graph_contract.py).

torch (and onnx) are imported when a graph is exported, not with this module: runtime/ imports without torch.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from bgprompt_core.atomic import atomic_write
from bgprompt_core.runtime.graph_contract import (DEFAULT_OPSET, INPUTS, METADATA_KEY, OUTPUT, GraphError, opset_of,
                                                  split_shape_slices, tensorrt_blockers)

if TYPE_CHECKING:
    from torch import nn

    from bgprompt_core.method.model import PromptedDepth

log = logging.getLogger("bgprompt.export")


def graph_metadata(model: PromptedDepth, size: int, extra: dict | None = None) -> dict:
    """The graph's metadata. The network is recorded at the graph's own (square) input: a network whose default
    input is not square (GLPN 480x640) runs at ``size`` x ``size`` in this graph, and a loader checks the two agree."""
    prompt = model.prompt
    spec = dataclasses.replace(model.net.spec, input_size=(size, size))  # validates size for this network
    return {"bgprompt_format": 1, "network": spec.to_dict(), "input_size": [size, size],
            "composite": model.composite, "depth_transform": model.transform.to_dict(),
            "prompt": prompt.cfg.to_dict() if prompt is not None else None, **(extra or {})}


def _dynamo_export(graph: nn.Module, example: tuple, path: str, opset: int, max_batch: int) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
    kwargs = dict(dynamo=True, input_names=list(INPUTS), output_names=[OUTPUT], opset_version=opset, verbose=False,
                  dynamic_shapes={"image": {0: batch}, "mask": {0: batch}})
    try:
        program = torch.onnx.export(graph, example, **kwargs)
    except Exception as exc:  # onnxscript's graph optimizer fails on some graphs (ZoeDepth: SplitToSequence)
        if "PassError" not in type(exc).__name__:
            raise
        log.warning("ONNX graph optimization failed (%s); exporting the unoptimized graph (runtimes optimize "
                    "it when they load it)", type(exc).__name__)
        program = torch.onnx.export(graph, example, optimize=False, **kwargs)
    program.save(path)


def export_onnx(model: PromptedDepth, path: str | Path, size: int, max_batch: int = 16, half: bool = False,
                opset: int = DEFAULT_OPSET, extra_meta: dict | None = None) -> Path:
    """Export with a dynamic batch dimension (1..max_batch) and bgprompt metadata, at exactly ``opset``.

    The dynamo exporter writes opset 18 and down-converts; where that conversion fails it keeps 18, which
    TensorRT 8.6 would read wrongly, so the TorchScript exporter (which writes opset 17 natively) is used
    instead. BiT networks (DPT-hybrid, ``mini``) always fail that way (their Pad has no 18 -> 17 adapter) and go
    to TorchScript directly. A graph at any other opset than asked raises GraphError. The frozen network's
    BiT weight standardization is folded (weight_folding.py) and Shape(start, end) split into Shape + Slice
    (onnx_graph.split_shape_slices), so TensorRT 8.6 and 10.x import the graph; anything else they would refuse
    of that kind raises GraphError.
    The file appears atomically: a killed export never leaves a truncated graph that a later start would reuse.
    """
    import onnx
    import torch

    from bgprompt_core.method.deployable import DeployGraph

    graph = DeployGraph(model, size, half).eval()
    example = (torch.rand(2, 3, size, size), torch.ones(2, 1, size, size))
    meta = graph_metadata(model, size, {"max_batch": max_batch, "precision": "fp16" if half else "fp32",
                                        "opset": opset, **(extra_meta or {})})

    def torchscript(tmp: str) -> None:
        torch.onnx.export(graph, example, tmp, dynamo=False, opset_version=opset, input_names=list(INPUTS),
                          output_names=[OUTPUT], dynamic_axes={n: {0: "batch"} for n in (*INPUTS, OUTPUT)})

    def write(tmp: str) -> None:
        if graph.folded:  # BiT: dynamo's opset-18 Pad has no 17 adapter, so go straight to TorchScript (opset 17)
            torchscript(tmp)
        else:
            _dynamo_export(graph, example, tmp, opset, max_batch)
            if opset_of(onnx.load(tmp, load_external_data=False)) != opset:
                log.warning("the dynamo exporter could not convert the graph to opset %d; using the TorchScript "
                            "exporter", opset)
                torchscript(tmp)
        proto = onnx.load(tmp)
        got = opset_of(proto)
        if got != opset:
            raise GraphError(f"the exporter could not write opset {opset} (it wrote {got}); TensorRT 8.6 needs "
                             f"<= 17, 10.x reads up to 20: pass a supported --opset")
        split = split_shape_slices(proto)
        blockers = tensorrt_blockers(proto)
        if blockers:
            raise GraphError(f"the exported graph has nodes TensorRT cannot import: {'; '.join(blockers[:3])}"
                             f"{' ...' if len(blockers) > 3 else ''} (a network op bgprompt does not fold yet)")
        log.info("export: %d weight-standardized convs folded, %d Shape(start, end) split", graph.folded, split)
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
        onnx.save(proto, tmp)

    return atomic_write(Path(path), write)


def __getattr__(name: str):
    """``DeployGraph`` lived here; it is a torch module now in ``method.deployable`` (imported on demand)."""
    if name == "DeployGraph":
        from bgprompt_core.method.deployable import DeployGraph

        return DeployGraph
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
