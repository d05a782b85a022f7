"""The prompted depth model: Eq. 1 compositing -> frozen network -> Eq. 2, as one module.

Training, evaluation and inference all run this same forward pass.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from bgprompt_core.method.composite import composite as eq1_composite
from bgprompt_core.method.config import DepthTransformConfig
from bgprompt_core.method.depth_transform import output_to_depth
from bgprompt_core.method.prompts import Prompt
from bgprompt_core.networks.loading import DepthNet


class PromptedDepth(nn.Module):
    """``depth = T(D(C))`` with ``C`` from Eq. 1, ``D`` the frozen network and ``T`` Eq. 2 or identity.

    Without a prompt the background is a constant grey ``plain_background`` in [0, 1] (1.0: the paper's white
    baseline), or a per-sample ``background`` tensor given to ``forward`` (noise, scene images...).
    ``composite``: Eq. 1's mode, "replace" or "additive" (the checkpoints' and graphs' ``composite`` field).
    """

    def __init__(self, net: DepthNet, prompt: Prompt | None = None, composite: str = "replace",
                 transform: DepthTransformConfig = DepthTransformConfig(), plain_background: float = 1.0, *,
                 mode: str | None = None):
        super().__init__()
        if mode is not None:
            warnings.warn("PromptedDepth(mode=...) is now PromptedDepth(composite=...)", DeprecationWarning,
                          stacklevel=2)
            composite = mode
        self.net = net
        self.prompt = prompt
        self.composite = composite
        self.transform = transform
        self.plain_background = plain_background

    @property
    def mode(self) -> str:
        """Deprecated name of ``composite``."""
        warnings.warn("PromptedDepth.mode is now PromptedDepth.composite", DeprecationWarning, stacklevel=2)
        return self.composite

    def background(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.prompt is not None:
            return self.prompt(mask, image)
        return torch.full_like(image, self.plain_background)

    def forward(self, image: torch.Tensor, mask: torch.Tensor,
                background: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """image (N, 3, H, W) and mask (N, 1, H, W) in [0, 1] at the network's input size."""
        bg = self.background(image, mask) if background is None else background
        c = eq1_composite(image, mask, bg, self.net.normalization, self.composite)
        raw = self.net(c)
        # Eq. 2 in fp32 even when the network ran in fp16 (autocast): as in the exported fp16 graph, where an fp16
        # min/max normalisation would lose 3 digits and its eps underflow
        depth = output_to_depth(raw.float(), self.net.spec.output_kind, mask[:, 0], self.transform)
        return {"depth": depth, "raw": raw, "composite": c}
