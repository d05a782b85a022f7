"""The torch backend: the PromptedDepth module itself (CPU or CUDA, fp16 autocast on GPU).

torch is imported when a ``TorchBackend`` is built, not with this module: runtime/ stays importable without it.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from bgprompt_core.runtime.devices import torch_device

if TYPE_CHECKING:
    from bgprompt_core.method.model import PromptedDepth

log = logging.getLogger("bgprompt.backend")


class TorchBackend:
    name = "torch"

    def __init__(self, model: PromptedDepth, device: str = "auto", precision: str = "fp32"):
        import torch

        from bgprompt_core.method.prompts import StaticPrompt

        self.device = torch.device(torch_device(device))
        self.model = model.to(self.device).eval()
        self.background = None
        # (image, mask, background) of the last run whose background came from the model (PNet, no prompt) in fp32:
        # the estimator's composite preview of that frame shows it instead of running PNet again
        self.last_background = None
        if isinstance(model.prompt, StaticPrompt):  # input-independent: computed once
            with torch.no_grad():
                self.background = model.prompt.image().to(self.device)
        self.fp16 = precision == "fp16" and self.device.type == "cuda"
        if precision == "fp16" and not self.fp16:
            log.warning("fp16 requested on %s: running fp32 (fp16 is a GPU precision)", self.device)

    def run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            img = torch.from_numpy(image).to(self.device)
            m = torch.from_numpy(mask).to(self.device)
            bg = None
            if self.background is not None:
                bg = self.background
                if bg.shape[-2:] != img.shape[-2:]:
                    bg = torch.nn.functional.interpolate(bg, size=img.shape[-2:], mode="bilinear",
                                                         align_corners=False)
                bg = bg.expand(img.shape[0], -1, -1, -1)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16):
                if bg is None:  # what the model's forward would compute first
                    bg = self.model.background(img, m)
                    self.last_background = None if self.fp16 else (image, mask, bg)
                depth = self.model(img, m, background=bg)["depth"]
            return depth.float().cpu().numpy()
