"""Eq. 3 / Eq. 4 and reporting metrics against closed forms and brute force."""
import numpy as np
import pytest
import torch

from bgprompt_core.method import metrics


def _sample(seed=0, n=2, h=12, w=10):
    g = torch.Generator().manual_seed(seed)
    gt = 1.0 + torch.rand(n, h, w, generator=g)
    pred = 0.5 + torch.rand(n, h, w, generator=g)
    mask = (torch.rand(n, h, w, generator=g) > 0.3).float()
    return pred, gt, mask


def test_si_rmse_of_scaled_gt_is_zero():
    _, gt, mask = _sample()
    assert torch.allclose(metrics.si_rmse(3.7 * gt, gt, mask), torch.zeros(2), atol=1e-4)


def test_si_rmse_equals_brute_force_scale_search():
    pred, gt, mask = _sample(1)
    got = metrics.si_rmse(pred, gt, mask)
    for i in range(2):
        m = mask[i].bool().numpy()
        p, g = pred[i].numpy()[m].astype(np.float64), gt[i].numpy()[m].astype(np.float64)
        scales = np.linspace(0.1, 5.0, 200001)
        rmse = np.sqrt(((scales[:, None] * p[None] - g[None]) ** 2).mean(1))
        assert got[i].item() == pytest.approx(rmse.min(), abs=1e-5)


def test_si_rmse_ignores_nan_outside_mask_and_gives_finite_gradients():
    pred, gt, mask = _sample(2)
    gt = torch.where(mask > 0, gt, torch.nan)
    pred.requires_grad_(True)
    val = metrics.si_rmse(pred, gt, mask).sum()
    val.backward()
    assert torch.isfinite(val) and torch.isfinite(pred.grad).all()


def test_normalize_to_mean_five():
    _, gt, mask = _sample(3)
    out = metrics.normalize_to_mean(gt, mask)
    for i in range(2):
        assert out[i][mask[i] > 0].mean().item() == pytest.approx(5.0, rel=1e-5)


def test_scale_shift_align_recovers_affine_map_and_matches_lstsq():
    pred, gt, mask = _sample(4)
    aligned = metrics.scale_shift_align(2.0 * gt - 0.7, gt, mask)
    assert torch.allclose(aligned * mask, gt * mask, atol=1e-4)
    out = metrics.scale_shift_align(pred, gt, mask)
    m = mask[0].bool().numpy()
    A = np.stack([pred[0].numpy()[m], np.ones(m.sum())], 1).astype(np.float64)
    st, *_ = np.linalg.lstsq(A, gt[0].numpy()[m].astype(np.float64), rcond=None)
    assert np.allclose(out[0].numpy()[m], A @ st, atol=1e-4)


def test_abs_rel_and_delta1_closed_form():
    gt = torch.full((1, 2, 2), 2.0)
    pred = torch.tensor([[[2.0, 3.0], [2.2, 1.0]]])
    mask = torch.ones(1, 2, 2)
    assert metrics.abs_rel(pred, gt, mask).item() == pytest.approx((0 + 0.5 + 0.1 + 0.5) / 4)
    assert metrics.delta1(pred, gt, mask).item() == pytest.approx(2 / 4)  # 1.5 and 2.0 ratios fail


def test_normal_loss_is_half_minus_half_cos():
    n1 = torch.nn.functional.normalize(torch.randn(1, 4, 4, 3), dim=-1)
    n2 = torch.nn.functional.normalize(torch.randn(1, 4, 4, 3), dim=-1)
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    cos = (n1 * n2).sum(-1).mean()
    assert metrics.normal_loss(n1, n2, valid).item() == pytest.approx(0.5 - 0.5 * cos.item(), abs=1e-6)
    assert metrics.normal_loss(n1, n1, valid).item() == pytest.approx(0.0, abs=1e-6)


def test_empty_mask_is_a_clear_error():
    pred, gt, _ = _sample()
    with pytest.raises(ValueError, match="empty object mask"):
        metrics.si_rmse(pred, gt, torch.zeros_like(pred))


def test_sample_metrics_of_a_perfect_prediction_up_to_scale():
    from bgprompt_core.evaluation.protocol import sample_metrics
    from scenes import sphere_sample

    _, depth, mask, K = sphere_sample(48)
    d, m = torch.from_numpy(depth)[None], torch.from_numpy(mask)[None]
    out = sample_metrics(0.3 * d, d, m, torch.from_numpy(K).float())
    assert out["si_rmse"].item() < 1e-4
    assert out["normal_cos"].item() == pytest.approx(1.0, abs=1e-5)
    assert out["abs_rel"].item() < 1e-5


def test_scale_shift_align_of_a_constant_prediction_is_the_target_mean():
    _, gt, mask = _sample(5)
    const = torch.full_like(gt, 3.0) + 1e-7 * torch.rand_like(gt)  # constant up to float noise
    aligned = metrics.scale_shift_align(const, gt, mask)
    for i in range(2):
        assert torch.allclose(aligned[i][mask[i] > 0], gt[i][mask[i] > 0].mean().expand(int(mask[i].sum())), atol=1e-4)
