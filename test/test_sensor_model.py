"""The simulated RGB-D sensor against closed forms: noise, quantization, shadow and edge widths, hole rates."""
import dataclasses

import numpy as np
import pytest

from bgprompt_core import sensor_model as sm

K = np.array([[400.0, 0, 159.5], [0, 400.0, 119.5], [0, 0, 1]])
P = sm.PRESETS["d435-like"]


def test_noise_grows_with_z_squared_and_readings_are_whole_millimetres():
    rng = np.random.default_rng(0)
    quiet = dataclasses.replace(P, quantum=1e-6)
    for z in (0.5, 1.0, 2.0):
        out = sm.simulate(np.full((300, 400), z), K, quiet, rng)
        err = out[out > 0].astype(np.float64) - z
        assert np.std(err) == pytest.approx(z**2 * 0.08 / (430.0 * 0.05), rel=0.03)
        assert abs(np.mean(err)) < 4 * np.std(err) / np.sqrt(err.size)
    out = sm.simulate(np.full((50, 50), 0.8), K, P, rng).astype(np.float64)
    assert np.allclose(out * 1000, np.round(out * 1000), atol=1e-3)  # float32 of whole millimetres


def test_range_limits_drop_readings():
    z = np.concatenate([np.full((10, 10), 0.1), np.full((10, 10), 1.0), np.full((10, 10), 9.0)], 1)
    out = sm.simulate(z, K, dataclasses.replace(P, edge_jump=100), np.random.default_rng(1))
    assert (out[:, :10] == 0).all() and (out[:, 10:20] > 0).all() and (out[:, 20:] == 0).all()


def test_shadow_band_is_left_of_the_object_and_f_b_inverse_depth_wide():
    z = np.full((20, 300), 1.0)
    z[:, 150:200] = 0.5  # a box 0.5 m in front of a wall at 1 m
    shadow = sm.stereo_shadow(z, K, 0.05)
    width = 400.0 * 0.05 * (1 / 0.5 - 1 / 1.0)  # 20 px
    cols = np.flatnonzero(shadow[0])
    assert (shadow == shadow[0]).all()
    assert cols.min() == 150 - round(width) and cols.max() == 149 and len(cols) == round(width)


def test_edge_band_invalidates_one_pixel_each_side_of_a_depth_step():
    z = np.full((10, 100), 0.6)
    z[:, 50:] = 1.2  # the far side is on the right: no shadow on this step's near side
    p = dataclasses.replace(P, flying=0.0)
    out = sm.simulate(z, K, p, np.random.default_rng(2))
    shadow = sm.stereo_shadow(z, K, p.baseline)
    assert not shadow.any()  # the near surface is left of the step
    assert np.flatnonzero(out[0] == 0).tolist() == [49, 50]
    fly = sm.simulate(z, K, dataclasses.replace(P, flying=1.0), np.random.default_rng(3))
    edge = fly[:, 49:51].astype(np.float64)
    assert (edge >= 0.6 - 0.01).all() and (edge <= 1.2 + 0.01).all()  # between the two surfaces


@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_dark_hole_rate_is_the_preset_fraction(fraction):
    z = np.full((120, 160), 0.7)
    mat = np.zeros(z.shape, np.uint8)
    mat[20:100, 30:130] = sm.DARK
    p = dataclasses.replace(P, dark_holes=fraction)
    out = sm.simulate(z, K, p, np.random.default_rng(4), material=mat)
    dark = mat == sm.DARK
    assert (out[dark] == 0).mean() == pytest.approx(fraction, abs=1 / dark.sum() + 1e-9)
    assert (out[~dark] > 0).all()
    holes = (out == 0) & dark  # spatially correlated: most hole pixels have hole neighbours
    assert (holes[1:-1, 1:-1] & holes[:-2, 1:-1] & holes[2:, 1:-1]).sum() > 0.7 * holes[1:-1, 1:-1].sum()


def test_transparent_surfaces_read_what_is_behind_them():
    behind = np.full((120, 160), 0.9)  # a wall at 0.9 m behind a glass block at 0.5 m
    z = behind.copy()
    mat = np.zeros(z.shape, np.uint8)
    mat[30:90, 40:120] = sm.TRANSPARENT
    z[30:90, 40:120] = 0.5
    p = dataclasses.replace(P, edge_jump=100.0)  # isolate the material effect from edge bands
    out = sm.simulate(z, K, p, np.random.default_rng(5), material=mat, behind=behind)
    glass = mat == sm.TRANSPARENT
    read = out[glass]
    assert (np.abs(read[read > 0] - 0.9) < 6 * P.sigma(0.9)).all()  # the wrong surface, not the glass at 0.5 m
    assert (read > 0).mean() == pytest.approx(0.8, abs=1 / glass.sum() + 1e-9)
    with pytest.raises(ValueError, match="behind"):
        sm.simulate(z, K, p, np.random.default_rng(5), material=mat)


def test_specular_highlights_are_holes():
    z = np.full((40, 40), 0.6)
    mat = np.full(z.shape, sm.SPECULAR, np.uint8)
    hl = np.zeros(z.shape)
    hl[10:20, 10:20] = 0.9
    out = sm.simulate(z, K, dataclasses.replace(P, edge_jump=100.0), np.random.default_rng(6), material=mat,
                      highlight=hl)
    assert (out[hl > 0.5] == 0).all() and (out[hl <= 0.5] > 0).all()


def test_none_is_perfect_and_millimetres_round_trip():
    z = np.random.default_rng(7).uniform(0.3, 2.0, (8, 8))
    assert np.array_equal(sm.simulate(z, K, sm.preset("none"), np.random.default_rng(0)), z.astype(np.float32))
    mm = sm.to_millimetres(np.array([[0.0, np.nan, 0.4567, 70.0]]))
    assert mm.dtype == np.uint16 and mm.tolist() == [[0, 0, 457, 65535]]
    with pytest.raises(ValueError, match="unknown sensor"):
        sm.preset("kinect-ish")
