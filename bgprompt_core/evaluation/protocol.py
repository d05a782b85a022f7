"""Per-sample evaluation with the paper's protocol plus references that expose "winning for the wrong reason".

Metrics per sample (GT rescaled to masked mean 5; Eq. 3 scale fit):
- ``si_rmse`` (Eq. 3) and ``normal_cos`` (normals of the scale-aligned prediction vs GT normals);
- ``shape_err``: RMSE inside the mask of the prediction's disparity (1 / depth) after a least-squares
  scale AND shift fit to GT disparity. Eq. 2 is affine in disparity (up to its floor), so a background
  that only moves the image's min / max cannot change it;
- ``collapsed``: the scale-aligned prediction's std inside the mask is below 1% of GT's (flat answer);
- ``abs_rel`` after scale and ``abs_rel_ss`` after scale-and-shift alignment.
Reference predictions: ``flat_depth`` (constant depth, normals along the optical axis) and
``oracle_shift`` (a disparity network's own output with disparity scale and shift fitted to GT:
the best any renormalization, Eq. 2 included, could do).
"""
from __future__ import annotations

import numpy as np
import torch

from bgprompt_core.geometry import normals_from_depth
from bgprompt_core.method.metrics import (abs_rel, normal_cosine, normalize_to_mean, optimal_scale, scale_shift_align,
                                   si_rmse)

COLLAPSE_RATIO = 0.01


def _masked_std(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n = m.flatten(1).sum(1)
    mean = (x * m).flatten(1).sum(1) / n
    return torch.sqrt((((x - mean.view(-1, 1, 1)) * m) ** 2).flatten(1).sum(1) / n)


@torch.no_grad()
def sample_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, K: torch.Tensor) -> dict[str, torch.Tensor]:
    """All per-sample metrics for predicted depth (N, H, W) against GT depth, object mask (N, H, W)."""
    m = (mask > 0.5) & (gt > 0) & torch.isfinite(gt)
    mf = m.float()
    gt5 = normalize_to_mean(torch.where(m, gt, torch.ones_like(gt)), mf)
    pred = torch.where(m, pred, torch.ones_like(pred))
    s = optimal_scale(pred, gt5, mf).view(-1, 1, 1)
    aligned = s * pred
    n_pred, ok_pred = normals_from_depth(aligned, K, mf)
    n_gt, ok_gt = normals_from_depth(gt5, K, mf)
    valid = ok_pred & ok_gt & m
    gt_disp = 1.0 / gt5
    pred_disp = 1.0 / pred.clamp_min(1e-6)
    shape = scale_shift_align(pred_disp, gt_disp, mf) - gt_disp
    shape_err = torch.sqrt(((shape * mf) ** 2).flatten(1).sum(1) / mf.flatten(1).sum(1))
    return {
        "si_rmse": si_rmse(pred, gt5, mf),
        "normal_cos": normal_cosine(n_pred, n_gt, valid),
        "shape_err": shape_err,
        "collapsed": (_masked_std(aligned, mf) < COLLAPSE_RATIO * _masked_std(gt5, mf)).float(),
        "abs_rel": abs_rel(aligned, gt5, mf),
        "abs_rel_ss": abs_rel(scale_shift_align(pred, gt5, mf), gt5, mf),
    }


def flat_depth(mask: torch.Tensor) -> torch.Tensor:
    """The trivial reference: constant depth (1) everywhere; its normals are the optical axis."""
    return torch.ones_like(mask, dtype=torch.float32)


def oracle_shift(raw_disparity: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, floor: float = 0.05) -> torch.Tensor:
    """Depth from the network's raw disparity with its scale and shift fitted to GT disparity on the mask.

    Fitted disparities are floored at ``floor`` times the sample's largest GT disparity (as Eq. 2 floors).
    """
    m = ((mask > 0.5) & (gt > 0)).float()
    gt_disp = torch.where(m > 0, 1.0 / gt.clamp_min(1e-6), torch.zeros_like(gt))
    aligned = scale_shift_align(raw_disparity, gt_disp, m)
    lo = floor * gt_disp.flatten(1).amax(1).view(-1, 1, 1)
    return 1.0 / torch.maximum(aligned, lo)


def frame_metrics(pred: np.ndarray, ref: np.ndarray, obj: np.ndarray, K: np.ndarray) -> dict:
    """``sample_metrics`` of one numpy frame (bag evaluation): depth ``pred`` against ``ref`` (metres, NaN or 0
    invalid) inside the object mask ``obj``, plus how much of the object has a prediction / a reference."""
    ok = obj & np.isfinite(ref) & (ref > 0) & np.isfinite(pred)
    n_obj = max(int(obj.sum()), 1)
    out = {"coverage": float((obj & np.isfinite(pred)).sum() / n_obj),  # object pixels with a prediction
           "ref_coverage": float((obj & np.isfinite(ref) & (ref > 0)).sum() / n_obj),  # ... with a sensor reading
           "pixels": int(ok.sum())}
    if ok.sum() < 16:
        return {**out, "si_rmse": float("nan"), "normal_cos": float("nan"), "abs_rel": float("nan"),
                "abs_rel_ss": float("nan")}
    t = lambda a: torch.from_numpy(np.where(ok, a, 1.0).astype(np.float32))[None]  # noqa: E731
    m = sample_metrics(t(pred), t(ref), torch.from_numpy(ok)[None].float(), torch.tensor(K, dtype=torch.float32))
    return {**out, **{k: float(m[k][0]) for k in ("si_rmse", "normal_cos", "abs_rel", "abs_rel_ss")}}
