"""Background prompt parameterizations (paper Sec. 3.1, "Prompt parameterization").

Every prompt maps ``(mask, image)`` to an RGB background ``sigma(B)`` in [0, 1] of shape (N, 3, H, W);
compositing (Eq. 1) then applies the depth network's normalization phi. The unconditional prompts
(``FourierPrompt``, ``PixelPrompt``) ignore their inputs; ``PromptNet`` is the conditional "PNet".
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bgprompt_core.method.dft import MatrixDFT
from bgprompt_core.method.config import FourierPromptConfig, PixelPromptConfig, PromptNetConfig
from bgprompt_core.method.unet import UNet


def fourier_scale(height: int, width: int, decay: float = 1.0) -> torch.Tensor:
    """The fixed 1/f^decay spectrum scale of Lucent / the reference code, shape (H, W//2+1).

    ``scale = 1 / max(f, 1/max(H, W)) ** decay`` with ``f = sqrt(fy^2 + fx^2)`` over
    ``fftfreq(H) x rfftfreq(W)``, so the DC term gets the largest weight ``max(H, W) ** decay``.
    """
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    freq = torch.sqrt(fy**2 + fx**2)
    return (1.0 / torch.clamp(freq, min=1.0 / max(height, width)) ** decay).float()


def spectrum_to_logits(spectrum: torch.Tensor, size: tuple[int, int], divisor: float) -> torch.Tensor:
    """Real/imag spectrum (..., H, W//2+1, 2) -> image logits (..., H, W) via an orthonormal irfft2."""
    complex_spec = torch.view_as_complex(spectrum.contiguous())
    return torch.fft.irfft2(complex_spec, s=size, norm="ortho") / divisor


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img, size=size, mode="bilinear", align_corners=False)


class Prompt(nn.Module):
    """Common interface: ``forward(mask, image=None) -> (N, 3, H, W)`` background in [0, 1] (B of Eq. 1)."""

    def forward(self, mask: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D401
        raise NotImplementedError

    @property
    def resolution(self) -> tuple[int, int]:
        return (self.cfg.height, self.cfg.width)


class StaticPrompt(Prompt):
    """A prompt that ignores its input: one background ``sigmoid(logits())`` for every object (1-BG)."""

    def logits(self) -> torch.Tensor:
        """Pre-sigmoid background, shape (1, 3, H, W)."""
        raise NotImplementedError

    def image(self) -> torch.Tensor:
        """The background in [0, 1], shape (1, 3, H, W)."""
        return torch.sigmoid(self.logits())

    def forward(self, mask: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        bg = _resize(self.image(), tuple(mask.shape[-2:]))
        return bg.expand(mask.shape[0], -1, -1, -1)


class FourierPrompt(StaticPrompt):
    """1-BG: one background parameterized by its Fourier spectrum (Olah et al. 2017, paper Sec. 3.1).

    ``B = irfft2(scale * spectrum, ortho) / divisor``, returned as ``sigmoid(B)``. The spectrum is
    initialised N(0, init_std^2); with the 1/f scale this gives natural-image-like 1/f noise.
    """

    def __init__(self, cfg: FourierPromptConfig):
        super().__init__()
        self.cfg = cfg
        h, w = cfg.height, cfg.width
        self.register_buffer("scale", fourier_scale(h, w, cfg.decay), persistent=False)
        self.spectrum = nn.Parameter(torch.randn(1, 3, h, w // 2 + 1, 2) * cfg.init_std)

    def logits(self) -> torch.Tensor:
        return spectrum_to_logits(self.scale[..., None] * self.spectrum, self.resolution, self.cfg.divisor)


class PixelPrompt(StaticPrompt):
    """The "Img space" ablation of 1-BG: background logits learned per pixel, Gaussian init, sigmoid."""

    def __init__(self, cfg: PixelPromptConfig):
        super().__init__()
        self.cfg = cfg
        self.pixels = nn.Parameter(torch.randn(1, 3, cfg.height, cfg.width) * cfg.init_std)

    def logits(self) -> torch.Tensor:
        return self.pixels


def mask_spectrum(x: torch.Tensor, side: int, dft: MatrixDFT | None = None) -> torch.Tensor:
    """rfft2 of (N, C, H, W) as 2C real channels (real parts, then imaginary), zero-padded to side x side."""
    if dft is None:
        spec = torch.fft.rfft2(x, norm="ortho")
        re, im = spec.real, spec.imag
    else:
        re, im = dft.rfft2(x)
    chans = torch.cat([re, im], dim=1)
    pad_w, pad_h = side - chans.shape[-1], side - chans.shape[-2]
    return F.pad(chans, (0, pad_w, 0, pad_h))


class PromptNet(Prompt):
    """PNet: a pix2pix U-Net from the object mask (or, ablated, the masked image) to a background.

    Fourier space (default): the input is the rFFT of the mask as (real, imag) channels zero-padded
    to a square; the U-Net predicts the real and imaginary RGB spectrum, which is cropped, inverted
    and squashed with ``sigmoid(gain * x)``. Pixel space ("Img space" ablation): the U-Net maps the
    input image-space channels to RGB logits directly. With ``bias`` a learned unconditional
    ``FourierPrompt`` is added (paper: "we add a bias term"): ``combine="mean"`` averages the two
    images (the reference code); ``combine="residual"`` adds the U-Net's logits to the bias's,
    ``sigmoid(gain * x + B)``, with the U-Net's last layer starting at zero, so a PNet whose bias is
    initialised from a trained 1-BG prompt starts exactly at that prompt and learns what the mask adds.
    """

    def __init__(self, cfg: PromptNetConfig):
        super().__init__()
        self.cfg = cfg
        h, w = cfg.height, cfg.width
        in_img = 1 if cfg.input == "mask" else 3
        if cfg.space == "fourier":
            self.side = _ceil_to(max(h, w // 2 + 1), 2**cfg.num_downs)
            in_ch, out_ch = 2 * in_img, 6
        else:
            self.side = _ceil_to(max(h, w), 2**cfg.num_downs)
            in_ch, out_ch = in_img, 3
        self.unet = UNet(in_ch, out_ch, num_downs=cfg.num_downs, base_channels=cfg.base_channels)
        self.bias = FourierPrompt(cfg.bias_config()) if cfg.bias else None
        if cfg.combine == "residual":
            last = self.unet.up[0][-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.dft: MatrixDFT | None = None  # set by ``for_export``: DFTs as matrix products
        self.bias_logits: torch.Tensor | None = None  # the bias baked for export

    def for_export(self) -> "PromptNet":
        """Make the graph free of FFT ops (TensorRT has no DFT): matrix DFTs, the bias baked as constant logits."""
        self.dft = MatrixDFT(self.cfg.height, self.cfg.width)
        if self.bias is not None:
            with torch.no_grad():
                self.bias_logits = self.bias.logits().detach().clone()
        return self

    def _bias_logits(self) -> torch.Tensor:
        return self.bias.logits() if self.bias_logits is None else self.bias_logits

    def _input(self, mask: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        if self.cfg.input == "mask":
            return mask
        if image is None:
            raise ValueError("PromptNet with input='image' needs the object image")
        return image * mask

    def forward(self, mask: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        h, w = self.resolution
        size_in = tuple(mask.shape[-2:])
        x = _resize(self._input(mask, image), (h, w))
        if self.cfg.space == "fourier":
            out = self.unet(mask_spectrum(x, self.side, self.dft))[..., :h, : w // 2 + 1]
            if self.dft is None:
                logits = spectrum_to_logits(torch.stack([out[:, :3], out[:, 3:]], dim=-1), (h, w), 1.0)
            else:
                logits = self.dft.irfft2(out[:, :3], out[:, 3:])
            logits = self.cfg.gain * logits
        else:
            logits = self.unet(F.pad(x, (0, self.side - w, 0, self.side - h)))[..., :h, :w]
        if self.bias is None:
            bg = torch.sigmoid(logits)
        elif self.cfg.combine == "residual":
            bg = torch.sigmoid(logits + self._bias_logits())
        else:
            bg = 0.5 * (torch.sigmoid(logits) + torch.sigmoid(self._bias_logits()))
        return _resize(bg, size_in)


def _ceil_to(x: int, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


def build_prompt(cfg: FourierPromptConfig | PixelPromptConfig | PromptNetConfig) -> Prompt:
    """Instantiate the prompt module a config describes."""
    if isinstance(cfg, FourierPromptConfig):
        return FourierPrompt(cfg)
    if isinstance(cfg, PixelPromptConfig):
        return PixelPrompt(cfg)
    if isinstance(cfg, PromptNetConfig):
        return PromptNet(cfg)
    raise TypeError(f"unknown prompt config {type(cfg).__name__}")
