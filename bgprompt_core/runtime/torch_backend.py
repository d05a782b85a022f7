"""The torch backend: the PromptedDepth module itself (CPU or CUDA, fp16 autocast on GPU)."""
from __future__ import annotations

import logging

import numpy as np
import torch

from bgprompt_core.method.model import PromptedDepth
from bgprompt_core.method.prompts import StaticPrompt

log = logging.getLogger("bgprompt.backend")


class TorchBackend:
    name = "torch"

    def __init__(self, model: PromptedDepth, device: str = "auto", precision: str = "fp32"):
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.model = model.to(self.device).eval()
        self.background = None
        if isinstance(model.prompt, StaticPrompt):  # input-independent: computed once
            with torch.no_grad():
                self.background = model.prompt.image().to(self.device)
        self.fp16 = precision == "fp16" and self.device.type == "cuda"
        if precision == "fp16" and not self.fp16:
            log.warning("fp16 requested on %s: running fp32 (fp16 is a GPU precision)", self.device)

    @torch.no_grad()
    def run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        img = torch.from_numpy(image).to(self.device)
        m = torch.from_numpy(mask).to(self.device)
        bg = None
        if self.background is not None:
            bg = self.background
            if bg.shape[-2:] != img.shape[-2:]:
                bg = torch.nn.functional.interpolate(bg, size=img.shape[-2:], mode="bilinear", align_corners=False)
            bg = bg.expand(img.shape[0], -1, -1, -1)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16):
            depth = self.model(img, m, background=bg)["depth"]
        return depth.float().cpu().numpy()
