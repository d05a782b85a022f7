"""Inference backends behind one interface: ``run(image, mask) -> depth`` on batches (numpy float32).

- ``torch``: the PromptedDepth module (CPU or CUDA, fp16 autocast on GPU);
- ``onnxruntime``: an exported DeployGraph, providers TensorRT > CUDA > CPU as available;
- ``tensorrt``: a native engine (tensorrt_backend.py), built from the same ONNX and cached.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .model import PromptedDepth

log = logging.getLogger("bgprompt.backend")
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class Backend(Protocol):
    name: str

    def run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """image (N, 3, S, S) float32 in [0, 1], mask (N, 1, S, S) float32 -> depth (N, S, S) float32."""


class TorchBackend:
    name = "torch"

    def __init__(self, model: PromptedDepth, device: str = "auto", precision: str = "fp32"):
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.model = model.to(self.device).eval()
        self.background = None
        from .prompts import FourierPrompt, PixelPrompt

        if isinstance(model.prompt, (FourierPrompt, PixelPrompt)):  # input-independent: compute it once
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


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, providers: list[str] | None = None):
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path} (create it with `bgprompt export`)")
        available = ort.get_available_providers()
        chosen = [p for p in (providers or PROVIDER_ORDER) if p in available] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), providers=chosen)
        self.providers = self.session.get_providers()
        log.info("onnxruntime providers: %s", self.providers)

    def run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(["depth"], {"image": np.ascontiguousarray(image, np.float32),
                                            "mask": np.ascontiguousarray(mask, np.float32)})[0]
