"""Orthonormal 2D real DFTs as plain matrix products, for exported graphs.

TensorRT has no ONNX DFT op, so PNet's ``rfft2`` of the mask and ``irfft2`` of the predicted spectrum
are written with precomputed cosine/sine matrices (exactly ``torch.fft.rfft2/irfft2(norm="ortho")``).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _angles(n_out: int, n_in: int, n: int) -> torch.Tensor:
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    j = torch.arange(n_in, dtype=torch.float64)[None, :]
    return 2 * math.pi * k * j / n


class MatrixDFT(nn.Module):
    """rfft2 / irfft2 (norm="ortho") of size (H, W) via matrices; last two dims are (H, W) / (H, W//2+1)."""

    def __init__(self, height: int, width: int):
        super().__init__()
        h, w = height, width
        half = w // 2 + 1
        ah = _angles(h, h, h)  # square: the same for forward and inverse (up to the sign of sin)
        self.register_buffer("ch", (torch.cos(ah) / math.sqrt(h)).float(), persistent=False)
        self.register_buffer("sh", (torch.sin(ah) / math.sqrt(h)).float(), persistent=False)
        aw = _angles(half, w, w)  # (half, W): forward real DFT along W
        self.register_buffer("cw", (torch.cos(aw) / math.sqrt(w)).float(), persistent=False)
        self.register_buffer("sw", (torch.sin(aw) / math.sqrt(w)).float(), persistent=False)
        weight = torch.full((half,), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        if w % 2 == 0:
            weight[-1] = 1.0  # the Nyquist bin appears once
        ai = _angles(w, half, w)  # (W, half): inverse along W
        self.register_buffer("icw", (weight * torch.cos(ai) / math.sqrt(w)).float(), persistent=False)
        self.register_buffer("isw", (weight * torch.sin(ai) / math.sqrt(w)).float(), persistent=False)
        self.size = (h, w)

    def rfft2(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts of ``torch.fft.rfft2(x, norm="ortho")``."""
        # along W: X[k] = sum_j x[j] e^{-i 2 pi k j / W}
        re = x @ self.cw.T
        im = -(x @ self.sw.T)
        # along H: complex multiply by e^{-i 2 pi k j / H}
        return self.ch @ re + self.sh @ im, self.ch @ im - self.sh @ re

    def irfft2(self, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        """``torch.fft.irfft2(re + i im, s=(H, W), norm="ortho")``."""
        # inverse along H: multiply by e^{+i 2 pi k j / H}
        yr = self.ch @ re - self.sh @ im
        yi = self.ch @ im + self.sh @ re
        # inverse real DFT along W (the imaginary parts of DC / Nyquist drop out as in irfft)
        return yr @ self.icw.T - yi @ self.isw.T
