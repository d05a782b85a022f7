"""Compositing the object onto the background prompt (paper Eq. 1) and the "Additive" ablation."""
from __future__ import annotations

import torch

from bgprompt_core.networks.normalization import Normalization


def composite(image: torch.Tensor, mask: torch.Tensor, background: torch.Tensor, phi: Normalization,
              mode: str = "replace") -> torch.Tensor:
    """Network input C from an image and a background, both (N, 3, H, W) in [0, 1].

    ``replace`` (Eq. 1): ``C = M * phi(I) + (1 - M) * phi(sigma(B))`` with a soft mask M (N, 1, H, W)
    in [0, 1]; where M == 1 the object pixels equal ``phi(I)`` bit for bit.
    ``additive`` (ablation, Table 3): ``C = phi(I) + phi(sigma(B)) - phi(0.5)``, a perturbation
    centred on zero added to every pixel, object included, as in adversarial attacks.
    """
    if image.shape[-2:] != mask.shape[-2:] or image.shape[-2:] != background.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape)}, mask {tuple(mask.shape)} and background "
                         f"{tuple(background.shape)} must share H x W")
    if mode == "replace":
        return mask * phi(image) + (1 - mask) * phi(background)
    if mode == "additive":
        return phi(image) + (phi(background) - phi(torch.full_like(background, 0.5)))
    raise ValueError(f"composite mode must be 'replace' or 'additive', got {mode!r}")
