"""The prompted depth model: Eq. 1 compositing -> frozen network -> Eq. 2, as one module.

Training, evaluation and inference all run this same forward pass.
"""
from __future__ import annotations

import torch
from torch import nn

from bgprompt_core.networks.loading import DepthNet
from bgprompt_core.method.composite import composite
from bgprompt_core.method.config import DepthTransformConfig
from bgprompt_core.method.depth_transform import output_to_depth
from bgprompt_core.method.prompts import Prompt


class PromptedDepth(nn.Module):
    """``depth = T(D(C))`` with ``C`` from Eq. 1, ``D`` the frozen network and ``T`` Eq. 2 or identity.

    Without a prompt the background is a constant colour ``fill`` in [0, 1] (1.0: the paper's white
    baseline), or a per-sample ``background`` tensor given to ``forward`` (noise, scene images...).
    """

    def __init__(self, net: DepthNet, prompt: Prompt | None = None, mode: str = "replace",
                 transform: DepthTransformConfig = DepthTransformConfig(), fill: float = 1.0):
        super().__init__()
        self.net = net
        self.prompt = prompt
        self.mode = mode
        self.transform = transform
        self.fill = fill

    def background(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.prompt is not None:
            return self.prompt(mask, image)
        return torch.full_like(image, self.fill)

    def forward(self, image: torch.Tensor, mask: torch.Tensor,
                background: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """image (N, 3, H, W) and mask (N, 1, H, W) in [0, 1] at the network's input size."""
        bg = self.background(image, mask) if background is None else background
        c = composite(image, mask, bg, self.net.normalization, self.mode)
        raw = self.net(c)
        # Eq. 2 in fp32 even when the network ran in fp16 (autocast): as in the exported fp16 graph, where an fp16
        # min/max normalisation would lose 3 digits and its eps underflow
        depth = output_to_depth(raw.float(), self.net.spec.output_kind, mask[:, 0], self.transform)
        return {"depth": depth, "raw": raw, "composite": c}
