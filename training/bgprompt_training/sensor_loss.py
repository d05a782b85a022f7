"""The paper's training loss (Eq. 3 + Eq. 4) restricted to a per-pixel weight mask: supervision from a sensor.

``object_depth_loss`` (bgprompt_core.method.metrics) takes V, the pixels both equations average over, from its mask. Here
V is the set of trustworthy sensor readings (data/trust.py), not the object mask: the prompt still sees the whole
object (the network's input and Eq. 1's composite use the object mask), but only trusted readings supervise it.
Eq. 3: si-RMSE against the sensor depth rescaled to mean 5 over V; Eq. 4: ``1/2 - 1/2 N . N*`` over the pixels of
V whose normals are defined, N* from the sensor depth smoothed over V (``trust.sensor_normals``).
"""
from __future__ import annotations

import torch

from bgprompt_core.method.metrics import object_depth_loss

from .data.trust import sensor_normals


def weighted_object_loss(pred: torch.Tensor, ref: torch.Tensor, weight: torch.Tensor, K: torch.Tensor,
                         smooth_sigma: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 3 + Eq. 4 (1:1) over V = ``weight`` > 0.5 (N, H, W); ``ref`` outside V is never read (NaN allowed).

    Returns the batch-mean loss and the per-sample terms; raises ValueError when a sample has no pixel in V or
    no defined normal there (the data loader drops such objects before training)."""
    v = weight > 0.5
    ref = torch.where(v, ref, torch.ones_like(ref))  # a placeholder outside V: nothing below reads it
    normals = sensor_normals(ref, v.to(ref.dtype), K, smooth_sigma)
    return object_depth_loss(pred, ref, v.to(ref.dtype), K, gt_normals=normals)
