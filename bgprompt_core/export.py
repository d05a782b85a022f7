"""The deployable graph (Eq. 1 + frozen network + Eq. 2) and its ONNX export.

``DeployGraph``: ``image`` (N, 3, S, S) in [0, 1] and ``mask`` (N, 1, S, S) -> ``depth`` (N, S, S). The
1-BG prompt is baked in as a constant image (``sigmoid(B)`` precomputed: exact), PNet runs with matrix
DFTs, so the graph has no DFT op and TensorRT can build it. With ``half=True`` the network runs in fp16
while normalization and Eq. 2 stay in fp32 (a strongly typed graph for TensorRT 10.12+/11).
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from torch import nn

from .composite import composite
from .depth_transform import output_to_depth
from .model import PromptedDepth
from .prompts import FourierPrompt, PixelPrompt, PromptNet

log = logging.getLogger("bgprompt.export")

INPUTS, OUTPUT = ("image", "mask"), "depth"


class DeployGraph(nn.Module):
    def __init__(self, model: PromptedDepth, size: int, half: bool = False):
        super().__init__()
        self.net = copy.deepcopy(model.net)
        self.mode, self.transform, self.kind = model.mode, model.transform, model.net.spec.output_kind
        self.phi = model.net.normalization
        self.half = half
        self.pnet: PromptNet | None = None
        prompt = model.prompt
        if isinstance(prompt, (FourierPrompt, PixelPrompt)):
            with torch.no_grad():
                bg = prompt(torch.zeros(1, 1, size, size))
            self.register_buffer("background", bg.detach().clone())
        elif isinstance(prompt, PromptNet):
            self.pnet = copy.deepcopy(prompt).for_export()
            self.register_buffer("background", torch.zeros(1, 3, size, size))
        else:
            self.register_buffer("background", torch.full((1, 3, size, size), float(model.fill)))
        if half:
            self.net.half()

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bg = self.pnet(mask, image) if self.pnet is not None else self.background.expand(image.shape[0], -1, -1, -1)
        c = composite(image, mask, bg, self.phi, self.mode)
        raw = self.net(c.half()).float() if self.half else self.net(c)
        return output_to_depth(raw, self.kind, mask[:, 0], self.transform)


def graph_metadata(model: PromptedDepth, size: int, extra: dict | None = None) -> dict:
    prompt = model.prompt
    return {"bgprompt_format": 1, "network": model.net.spec.to_dict(), "input_size": [size, size],
            "composite": model.mode, "depth_transform": model.transform.to_dict(),
            "prompt": prompt.cfg.to_dict() if prompt is not None else None, **(extra or {})}


def export_onnx(model: PromptedDepth, path: str | Path, size: int, max_batch: int = 8, half: bool = False,
                opset: int = 18, extra_meta: dict | None = None) -> Path:
    """Export with the dynamo exporter, a dynamic batch dimension, and bgprompt metadata in the model."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = DeployGraph(model, size, half).eval()
    example = (torch.rand(2, 3, size, size), torch.ones(2, 1, size, size))
    batch = torch.export.Dim("batch", min=1, max=max_batch)
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
    program.save(str(path))
    proto = onnx.load(str(path))
    meta = graph_metadata(model, size, {"max_batch": max_batch, "precision": "fp16" if half else "fp32",
                                        **(extra_meta or {})})
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "bgprompt", json.dumps(meta, sort_keys=True)
    onnx.save(proto, str(path))
    return path


def read_onnx_metadata(path: str | Path) -> dict:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == "bgprompt":
            return json.loads(p.value)
    raise ValueError(f"{path}: ONNX model without bgprompt metadata (export it with `bgprompt export`)")
