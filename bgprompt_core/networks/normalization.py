"""phi: a depth network's own input normalization (paper Sec. 3.1, Eq. 1), and the usual mean / std values.

Importable without torch (``DepthNetSpec`` carries one): torch is imported when phi is applied to a tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Normalization:
    """``phi(x) = (x - mean) / std`` per channel, for x in [0, 1]."""

    mean: tuple[float, float, float] = HALF
    std: tuple[float, float, float] = HALF

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 channels, got {self.mean} / {self.std}")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        import torch

        mean = torch.tensor(self.mean, dtype=c.dtype, device=c.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=c.dtype, device=c.device).view(1, 3, 1, 1)
        return c * std + mean

    def matches(self, other: "Normalization", tol: float = 1e-6) -> bool:
        return all(abs(a - b) <= tol for a, b in zip(self.mean + self.std, other.mean + other.std))
