"""The simulated RGB-D sensor against closed forms: noise, quantization, shadow and edge widths, hole rates."""
import dataclasses

import cv2
import numpy as np
import pytest

from bgprompt_core.evaluation import sensor_model as sm

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


# --- the family of presets: harsh active stereo and time of flight, by counted rates and closed forms -------------
H_ = sm.PRESETS["harsh-stereo"]
T_ = sm.PRESETS["tof-like"]


def discs(material: int, n: int = 6, size=(160, 240), radius: int = 22):
    """A plane at 0.7 m with ``n`` discs 5 cm in front of it: depth, material map, instance ids."""
    z = np.full(size, 0.7)
    mat = np.zeros(size, np.uint8)
    inst = np.zeros(size, np.int32)
    v, u = np.mgrid[:size[0], :size[1]]
    for k in range(n):
        cy, cx = 40 + 80 * (k // 3), 40 + 80 * (k % 3)
        d = (v - cy) ** 2 + (u - cx) ** 2 <= radius**2
        z[d], mat[d], inst[d] = 0.65, material, 10 + k
    return z, mat, inst


def test_harsh_stereo_specular_loses_large_silhouette_blobs_and_reads_reflections_behind():
    z, mat, inst = discs(sm.SPECULAR)
    p = dataclasses.replace(H_, edge_jump=100.0, flying=0.0)  # isolate the material effect from edge bands
    out = sm.simulate(z, K, p, np.random.default_rng(20), material=mat, highlight=np.zeros(z.shape), instance=inst)
    coverage, refl_share = [], []
    for oid in np.unique(inst[inst > 0]):
        obj = inst == oid
        lost = obj & (out == 0)
        assert p.specular_loss[0] - 0.01 <= lost.sum() / obj.sum() <= p.specular_loss[1] + 0.01
        n, lab, stats, _ = cv2.connectedComponentsWithStats(lost.astype(np.uint8), connectivity=8)
        biggest = lab == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])
        rim = obj & ~cv2.erode(obj.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert (biggest & rim).any() and biggest.sum() > 0.2 * obj.sum()  # large, touching the silhouette
        read = obj & (out > 0)
        off = out[read].astype(np.float64) - z[read]
        tol = 4 * p.sigma(0.85)
        behind = (off > 0.03 - tol) & (off < 0.20 + tol)  # reflections 3-20 cm behind the surface
        assert not (off < -tol).any()  # nothing in front
        assert ((np.abs(off) < tol) | behind).all()
        coverage.append(read.sum() / obj.sum())
        refl_share.append(behind.sum() / obj.sum())
        assert p.reflections[0] - 0.01 <= refl_share[-1] <= p.reflections[1] + 0.01
    assert 0.3 <= np.mean(coverage) <= 0.5  # "specular coverage near 40%"


def test_harsh_stereo_dark_loses_40_to_90_percent_in_ragged_patterns():
    z, mat, inst = discs(sm.DARK)
    p = dataclasses.replace(H_, edge_jump=100.0)
    out = sm.simulate(z, K, p, np.random.default_rng(21), material=mat, instance=inst)
    smooth = sm.simulate(z, K, dataclasses.replace(p, dark_ragged=0.0), np.random.default_rng(21), material=mat,
                         instance=inst)

    def border_share(holes):  # hole pixels with a 4-neighbour reading: high for ragged patterns
        k = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
        return (holes & cv2.dilate((~holes).astype(np.uint8), k).astype(bool)).sum() / max(holes.sum(), 1)

    losses = []
    for oid in np.unique(inst[inst > 0]):
        obj = inst == oid
        losses.append((out[obj] == 0).mean())
        assert 0.4 - 0.01 <= losses[-1] <= 0.9 + 0.01
        assert border_share(obj & (out == 0)) > 1.5 * border_share(obj & (smooth == 0))
    assert np.ptp(losses) > 0.1  # drawn per object, not one rate for all
    assert (out[(mat == 0) & ~sm.stereo_shadow(z, K, p.baseline)] > 0).all()


def test_harsh_stereo_glass_mixes_surface_behind_and_missing_readings():
    behind = np.full((120, 160), 0.9)
    z = behind.copy()
    mat = np.zeros(z.shape, np.uint8)
    mat[30:90, 40:120] = sm.TRANSPARENT
    z[30:90, 40:120] = 0.5
    p = dataclasses.replace(H_, edge_jump=100.0)
    out = sm.simulate(z, K, p, np.random.default_rng(22), material=mat, behind=behind).astype(np.float64)
    g = mat == sm.TRANSPARENT
    tol = 6 * p.sigma(0.9)
    assert (np.abs(out[g] - 0.9) < tol).mean() == pytest.approx(p.transparent_behind, abs=0.005)
    assert (np.abs(out[g] - 0.5) < tol).mean() == pytest.approx(p.transparent_surface, abs=0.005)
    assert (out[g] == 0).mean() == pytest.approx(1 - p.transparent_behind - p.transparent_surface, abs=0.005)


def test_tof_noise_is_a_floor_plus_a_share_of_the_distance_and_has_no_stereo_shadow():
    quiet = dataclasses.replace(T_, quantum=1e-6, systematic=0.0, multipath=0.0)
    for z0 in (0.5, 1.0, 2.0):
        out = sm.simulate(np.full((300, 400), z0), K, quiet, np.random.default_rng(23))
        assert np.std(out[out > 0].astype(np.float64) - z0) == pytest.approx(0.0015 + 0.001 * z0, rel=0.03)
    assert T_.sigma(2.0) == pytest.approx(0.0035) and T_.noise.quadratic == 0
    z = np.full((20, 300), 1.0)
    z[:, 150:200] = 0.5  # a box in front of a wall: a stereo camera loses a 20 px band left of it, ToF none
    out = sm.simulate(z, K, dataclasses.replace(quiet, flying=0.0), np.random.default_rng(24))
    assert np.flatnonzero(out[0] == 0).tolist() == [149, 150, 199, 200]  # only the edge band


def test_tof_multipath_reads_concave_regions_too_far_and_flat_ones_right():
    v, u = np.mgrid[:120, :160].astype(np.float64)
    r2 = ((u - 80) ** 2 + (v - 60) ** 2) / 40.0**2
    bowl = np.where(r2 < 1, 0.6 + 0.04 * (1 - r2), 0.6)  # a dish 4 cm deep, its centre farthest
    p = dataclasses.replace(T_, systematic=0.0, quantum=1e-6, noise_floor=0.0, noise_linear=0.0, edge_jump=100.0)
    out = sm.simulate(bowl, K, p, np.random.default_rng(25)).astype(np.float64)
    bias = out - bowl
    assert bias[(r2 < 0.2)].mean() > 0.002 and (bias >= -1e-6).all() and (bias <= p.multipath_max + 1e-6).all()
    assert np.abs(bias[(r2 > 2)]).max() < 2e-6  # the flat surround reads right
    mean = cv2.bilateralFilter(bowl.astype(np.float32), -1, sm.MULTIPATH_RANGE, sm.MULTIPATH_SIGMA)
    expected = np.clip(p.multipath * (bowl - mean), 0, p.multipath_max)
    assert np.allclose(bias, expected, atol=2e-6)  # the closed form of the model


def test_tof_flying_pixels_and_dark_surfaces():
    z = np.full((60, 100), 0.6)
    z[:, 50:] = 1.2
    p = dataclasses.replace(T_, systematic=0.0, multipath=0.0)
    out = sm.simulate(z, K, p, np.random.default_rng(26)).astype(np.float64)
    band = out[:, 49:51]
    mixed = (band > 0.6 + 0.02) & (band < 1.2 - 0.02)  # between the two surfaces
    assert mixed.mean() == pytest.approx(p.flying * 0.96, abs=0.08)  # the flying share, ends of the band aside
    zd, mat, inst = discs(sm.DARK)
    q = dataclasses.replace(p, edge_jump=100.0, quantum=1e-6)
    out = sm.simulate(zd, K, q, np.random.default_rng(27), material=mat, instance=inst).astype(np.float64)
    for oid in np.unique(inst[inst > 0]):
        obj = inst == oid
        assert 0.2 - 0.01 <= (out[obj] == 0).mean() <= 0.5 + 0.01
    dark_err = (out - zd)[(mat == sm.DARK) & (out > 0)]
    assert np.std(dark_err) == pytest.approx(3 * q.sigma(0.65), rel=0.1)  # less signal: 3x the noise


def test_presets_name_their_sources_and_fusion_takes_their_noise():
    from bgprompt_core.rgbd.fusion import FusionConfig

    for name, p in sm.PRESETS.items():
        assert p.sources, name
        f = FusionConfig.for_noise(p.noise)
        for z in (0.3, 1.0, 2.5):
            assert f.noise.sigma(z) == pytest.approx(p.sigma(z), rel=1e-12)
    assert sm.PRESETS["d435-like"].sigma(1.0) == pytest.approx(0.08 / (430 * 0.05))
    with pytest.raises(ValueError, match="kind"):
        sm.SensorPreset("x", kind="lidar")
