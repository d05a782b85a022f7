"""Losses and metrics of the paper (Eq. 3, Eq. 4) and the evaluation protocol (Sec. 4).

All functions take batched tensors: depth (N, H, W), mask (N, H, W) with object pixels > 0.5, and
return one value per sample (N,) unless named ``*_loss``.
"""
from __future__ import annotations

import torch

from bgprompt_core.geometry import normals_from_depth

GT_MEAN = 5.0  # "we scale depths for each object to have a mean value of 5"


def _m(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return (mask > 0.5).to(like.dtype)


def _masked(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x where m else 0, without letting NaN/inf outside the mask leak into sums or gradients."""
    return torch.where(m > 0, x, torch.zeros_like(x))


def _count(m: torch.Tensor) -> torch.Tensor:
    n = m.flatten(1).sum(1)
    if bool((n == 0).any()):
        raise ValueError("empty object mask: metrics need at least one object pixel per sample")
    return n


def normalize_to_mean(depth: torch.Tensor, mask: torch.Tensor, target: float = GT_MEAN) -> torch.Tensor:
    """Rescale each sample so its masked mean is ``target`` (the paper's protocol, target 5)."""
    m = _m(mask, depth)
    mean = _masked(depth, m).flatten(1).sum(1) / _count(m)
    return depth * (target / mean).view(-1, 1, 1)


def optimal_scale(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Closed-form ``argmin_s sum_m (s p - g)^2 = sum(p g m) / (sum(p^2 m) + eps)`` (Eq. 3).

    The batched, differentiable torch fits (Eq. 3's loss and the evaluation protocol) are here; the torch-free
    numpy fit a robot runs (sensor alignment, the grasp oracle) is ``rgbd.alignment.least_squares``."""
    m = _m(mask, pred)
    p, g = _masked(pred, m), _masked(gt, m)
    return (p * g).flatten(1).sum(1) / ((p * p).flatten(1).sum(1) + eps)


def si_rmse(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 3: RMSE over object pixels after the optimal per-sample scale of ``pred``."""
    m = _m(mask, pred)
    s = optimal_scale(pred, gt, mask).view(-1, 1, 1)
    err = _masked(s * pred - gt, m)
    return torch.sqrt((err * err).flatten(1).sum(1) / _count(m) + 1e-12)


def scale_shift_align(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      eps: float = 1e-9) -> torch.Tensor:
    """``s * pred + t`` with (s, t) the per-sample least-squares fit to ``target`` on the mask."""
    m = _m(mask, pred)
    n = _count(m)
    p, g = _masked(pred, m), _masked(target, m)
    sp, sg = p.flatten(1).sum(1), g.flatten(1).sum(1)
    spp, spg = (p * p).flatten(1).sum(1), (p * g).flatten(1).sum(1)
    det = n * spp - sp * sp
    # a (nearly) constant prediction has no defined scale: fit the shift only (s = 0) instead of dividing by ~0
    ok = det > 1e-7 * n * spp + eps
    s = torch.where(ok, (n * spg - sp * sg) / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det))
    t = (sg - s * sp) / n
    return s.view(-1, 1, 1) * pred + t.view(-1, 1, 1)


def abs_rel(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - gt| / gt over the mask (no alignment: align first for relative predictions)."""
    m = _m(mask, pred)
    return _masked((pred - gt).abs() / gt, m).flatten(1).sum(1) / _count(m)


def delta1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, threshold: float = 1.25) -> torch.Tensor:
    """Fraction of mask pixels with max(pred/gt, gt/pred) < threshold."""
    m = _m(mask, pred)
    ratio = torch.maximum(pred / gt, gt / pred)
    return _masked((ratio < threshold).to(pred.dtype), m).flatten(1).sum(1) / _count(m)


def normal_cosine(n_pred: torch.Tensor, n_gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean cosine between unit normals (N, H, W, 3) over ``valid`` (N, H, W) pixels."""
    cos = _masked((n_pred * n_gt).sum(-1), _m(valid, n_pred[..., 0]))
    return cos.flatten(1).sum(1) / _count(_m(valid, cos))


def normal_loss(n_pred: torch.Tensor, n_gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eq. 4: mean over valid pixels of ``1/2 - 1/2 N . N*``, per sample."""
    return 0.5 - 0.5 * normal_cosine(n_pred, n_gt, valid)


def object_depth_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, K: torch.Tensor,
                      gt_normals: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss: Eq. 3 + Eq. 4 (weights 1:1) with GT rescaled to masked mean 5.

    Normals of both depths come from back-projection with K; GT normals may be given instead (e.g.
    rendered). Returns the batch-mean loss and per-sample terms.
    """
    gt5 = normalize_to_mean(gt, mask)
    si = si_rmse(pred, gt5, mask)
    n_pred, ok_pred = normals_from_depth(pred, K, mask)
    if gt_normals is None:
        gt_normals, ok_gt = normals_from_depth(gt5, K, mask)
    else:
        ok_gt = torch.isfinite(gt_normals).all(-1)
    valid = ok_pred & ok_gt & (mask > 0.5)
    nl = normal_loss(n_pred, torch.nan_to_num(gt_normals), valid)
    return (si + nl).mean(), {"si_rmse": si.detach(), "normal_loss": nl.detach()}
