"""From the network's raw output to depth (paper Eq. 2 for disparity networks)."""
from __future__ import annotations

import torch

from bgprompt_core.method.config import DepthTransformConfig
from bgprompt_core.settings import OUTPUT_KINDS


def _masked_extrema(x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.flatten(1)
    if mask is None:
        return flat.amin(dim=1), flat.amax(dim=1)
    m = mask.flatten(1) > 0.5
    # a data-dependent check cannot be exported (TensorRT / ONNX): there an empty mask gives NaN depth, which the
    # estimator treats as invalid (it never sends one: split_mask drops objects below min_object_pixels)
    if not torch.compiler.is_exporting() and not bool(m.any(dim=1).all()):
        raise ValueError("Eq. 2 with range='object' needs a non-empty mask in every sample")
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    return torch.where(m, flat, inf).amin(dim=1), torch.where(m, flat, -inf).amax(dim=1)


def disparity_to_depth(disparity: torch.Tensor, mask: torch.Tensor | None = None,
                       cfg: DepthTransformConfig = DepthTransformConfig(), eps: float = 1e-8) -> torch.Tensor:
    """Eq. 2: ``D = max((d - min d) / (max d - min d), floor) ** -1`` per sample.

    ``disparity`` is (N, H, W). With ``cfg.range == "image"`` min/max run over the whole image, prompt
    included (paper and reference code); with ``"object"`` over pixels where ``mask`` (N, H, W) > 0.5.
    Depth lies in [1, 1/floor]: 1 at the largest disparity, 1/floor (20) at the smallest.
    """
    lo, hi = _masked_extrema(disparity, mask if cfg.range == "object" else None)
    lo, hi = lo.view(-1, 1, 1), hi.view(-1, 1, 1)
    normed = (disparity - lo) / (hi - lo + eps)
    return 1.0 / torch.clamp(normed, min=cfg.floor)


def output_to_depth(raw: torch.Tensor, output_kind: str, mask: torch.Tensor | None = None,
                    cfg: DepthTransformConfig = DepthTransformConfig()) -> torch.Tensor:
    """Eq. 2 for relative disparity, identity for networks that already predict depth."""
    if output_kind == "relative_disparity":
        return disparity_to_depth(raw, mask, cfg)
    if output_kind in ("relative_depth", "metric_depth"):
        return raw
    raise ValueError(f"unknown output kind {output_kind!r}; expected one of {OUTPUT_KINDS}")
