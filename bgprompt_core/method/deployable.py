"""``DeployGraph``: the deployable module (Eq. 1 + frozen network + Eq. 2) that runtime.export writes to ONNX.

``image`` (N, 3, S, S) in [0, 1] and ``mask`` (N, 1, S, S) -> ``depth`` (N, S, S). The 1-BG prompt is baked in
as a constant image (``sigmoid(B)`` precomputed: exact), PNet runs with matrix DFTs, so the graph has no DFT op
and TensorRT can build it. With ``half=True`` the network runs in fp16 while normalization and Eq. 2 stay in fp32
(a strongly typed graph for TensorRT 10.12+/11).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from bgprompt_core.method.composite import composite as eq1_composite
from bgprompt_core.method.depth_transform import output_to_depth
from bgprompt_core.method.model import PromptedDepth
from bgprompt_core.method.prompts import PromptNet, StaticPrompt
from bgprompt_core.networks.weight_folding import fold_weight_standardization


class DeployGraph(nn.Module):
    def __init__(self, model: PromptedDepth, size: int, half: bool = False):
        super().__init__()
        self.net = copy.deepcopy(model.net)
        self.folded = fold_weight_standardization(self.net)  # frozen: BiT's standardized weights are constants
        self.composite, self.transform, self.kind = model.composite, model.transform, model.net.spec.output_kind
        self.phi = model.net.normalization
        self.half = half
        self.pnet: PromptNet | None = None
        prompt = model.prompt
        if isinstance(prompt, StaticPrompt):
            with torch.no_grad():
                bg = prompt(torch.zeros(1, 1, size, size))
            self.register_buffer("background", bg.detach().clone())
        elif isinstance(prompt, PromptNet):
            self.pnet = copy.deepcopy(prompt).for_export()
            self.register_buffer("background", torch.zeros(1, 3, size, size))
        else:
            self.register_buffer("background", torch.full((1, 3, size, size), float(model.plain_background)))
        if half:
            self.net.half()

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bg = self.pnet(mask, image) if self.pnet is not None else self.background.expand(image.shape[0], -1, -1, -1)
        c = eq1_composite(image, mask, bg, self.phi, self.composite)
        raw = self.net(c.half()).float() if self.half else self.net(c)
        return output_to_depth(raw, self.kind, mask[:, 0], self.transform)
