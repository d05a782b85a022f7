"""The pix2pix U-Net generator (Isola et al. 2017) used as the Prompting network (paper Sec. 4).

As in the reference configuration: 4x4 convolutions with stride 2, LeakyReLU(0.2) before each
down-convolution, ReLU before each transposed convolution, skip connections by concatenation, no
normalization, no dropout and no final Tanh. Level ``i`` has ``base * min(2**i, 8)`` channels, which
reproduces pix2pix's ``unet_128`` (7 downsamplings, 64 base channels) exactly. Written here because
the pix2pix module is not packaged on any index and the reference code's import of it is missing.
"""
from __future__ import annotations

import torch
from torch import nn


class UNet(nn.Module):
    """Input (N, in_ch, S, S) with S divisible by 2**num_downs -> output (N, out_ch, S, S)."""

    def __init__(self, in_ch: int, out_ch: int, num_downs: int = 7, base_channels: int = 64):
        super().__init__()
        chans = [base_channels * min(2**i, 8) for i in range(num_downs)]
        self.num_downs = num_downs
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for i, c in enumerate(chans):
            c_in = in_ch if i == 0 else chans[i - 1]
            conv = nn.Conv2d(c_in, c, kernel_size=4, stride=2, padding=1)
            self.down.append(conv if i == 0 else nn.Sequential(nn.LeakyReLU(0.2), conv))
            up_in = c if i == num_downs - 1 else 2 * c
            up_out = out_ch if i == 0 else chans[i - 1]
            self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(up_in, up_out, 4, stride=2, padding=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**self.num_downs or x.shape[-2] % 2**self.num_downs:
            raise ValueError(f"UNet input {tuple(x.shape[-2:])} must be divisible by {2**self.num_downs}")
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        y = self.up[-1](skips[-1])
        for i in range(self.num_downs - 2, -1, -1):
            y = self.up[i](torch.cat([skips[i], y], dim=1))
        return y
