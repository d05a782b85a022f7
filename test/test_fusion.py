"""Sensor fusion (bgprompt_core.fusion) on an analytic tabletop: a box standing on a table, seen from above."""
import numpy as np
import pytest

from bgprompt_core import fusion as fu
from bgprompt_core.geometry import camera_rays
from scenes import box_on_table

H, W, F = 120, 160, 150.0
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])


def scene():
    return box_on_table(K, H, W)


def sensor_of(z, rng, sigma=0.001):
    return np.round((z + rng.normal(0, sigma, z.shape)) * 1000).astype(np.float32) / 1000


def run(pred, sensor, box, fill=True, align="scale"):
    rays = camera_rays(K, H, W).astype(np.float64)
    return fu.fuse_object(pred, sensor, box, rays, fu.ring_mask(box, 15), fu.FusionConfig(), align, fill)


def test_support_plane_is_recovered_despite_outliers():
    rng = np.random.default_rng(0)
    n = np.array([0.0, -0.8, -0.6])
    pts = rng.uniform(-0.3, 0.3, (600, 3))
    pts -= (pts @ n + 0.5)[:, None] * n  # onto n . p + 0.5 = 0
    pts[:200] += rng.normal(0, 0.05, (200, 3))  # a third are clutter
    got_n, got_d, inliers = fu.fit_plane(pts, 0.003, 200, rng, 50)
    assert np.degrees(np.arccos(abs(got_n @ n))) < 0.5 and got_d == pytest.approx(0.5, abs=2e-3)
    assert 390 <= inliers <= 450
    assert fu.fit_plane(pts[:10], 0.003, 50, rng, 50) is None  # too few points


def test_fill_keeps_every_consistent_sensor_pixel_bit_exact_and_fills_holes():
    rng = np.random.default_rng(1)
    gt, _, box = scene()
    sensor = sensor_of(gt, rng)
    holes = box & (rng.random(box.shape) < 0.4)  # specular / dark holes
    sensor[holes] = 0
    pred = np.where(box, gt / 3.0, np.nan)  # the network's shape, up to scale
    depth, source, rep = run(pred, sensor, box)
    assert rep.scale_from == "object" and rep.scale == pytest.approx(3.0, rel=2e-3)
    assert rep.see_through < 0.02 and rep.plane_inliers > 100
    kept = source == fu.SOURCE_SENSOR
    assert np.array_equal(depth[kept], sensor[kept])  # bit-exact
    consistent = box & (sensor > 0) & (np.abs(sensor - gt) < 0.004)
    assert kept[consistent].all()  # every consistent reading was kept
    filled = source == fu.SOURCE_PREDICTED
    assert filled[holes].all() and np.abs(depth[filled] - gt[filled]).max() < 0.004
    assert np.isnan(depth[~box]).all() and (source[~box] == fu.SOURCE_NONE).all()
    assert rep.kept == pytest.approx(kept.sum() / box.sum())


def test_see_through_readings_are_rejected_and_scale_comes_from_the_support_contact():
    rng = np.random.default_rng(2)
    gt, table, box = scene()
    sensor = sensor_of(np.where(box, table, gt), rng)  # glass: the table behind it...
    sensor[box & (rng.random(box.shape) < 0.2)] = 0  # ...or nothing
    pred = np.where(box, gt / 3.0, np.nan)
    depth, source, rep = run(pred, sensor, box)
    # the rim pixels' centres lie up to half a pixel (here ~2.5 mm) above the resting edge: 0.6% high
    assert rep.scale_from == "support-contact" and rep.scale == pytest.approx(3.0, rel=1e-2)
    assert rep.see_through > 0.75 and rep.kept == 0  # no reading of the table behind it is kept
    on_object = np.abs(depth[box] - gt[box]) < 0.010
    assert on_object.mean() >= 0.95, on_object.mean()
    # the naive robust fit on the object's readings locks onto the table (the pilot's failure)
    from bgprompt_core.alignment import fit_to_sensor

    naive = fit_to_sensor(pred, sensor, box & (sensor > 0))
    assert np.mean(np.abs(naive.scale * pred[box] - gt[box]) < 0.010) < 0.5


def test_fusion_none_returns_the_aligned_prediction_only():
    rng = np.random.default_rng(3)
    gt, _, box = scene()
    sensor = sensor_of(gt, rng)
    pred = np.where(box, gt / 2.0, np.nan)
    depth, source, rep = run(pred, sensor, box, fill=False)
    assert (source[box] == fu.SOURCE_PREDICTED).all() and rep.kept == 0
    assert np.allclose(depth[box], rep.scale * pred[box], rtol=1e-6)


def test_no_readings_and_no_plane_gives_no_scale():
    gt, _, box = scene()
    depth, source, rep = run(np.where(box, gt, np.nan), np.zeros_like(gt, np.float32), box)
    assert rep is None and np.isnan(depth).all() and not source.any()
