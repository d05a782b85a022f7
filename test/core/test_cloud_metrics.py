"""Cloud metrics in millimetres against hand-computed small clouds."""
import numpy as np
import pytest

from bgprompt_core.evaluation import cloud_metrics as cm
from bgprompt_core.geometry import oriented_box


def test_chamfer_accuracy_completeness_by_hand():
    gt = np.array([[0, 0, 1.0], [0.01, 0, 1.0], [0.02, 0, 1.0]])
    pred = np.array([[0, 0, 1.003], [0.01, 0, 1.008], [0.05, 0, 1.0], [np.nan, np.nan, np.nan]])
    e = cm.cloud_errors(pred, gt)
    to_gt = [3.0, 8.0, 30.0]
    to_pred = [3.0, 8.0, np.hypot(10.0, 8.0)]
    assert e["points"] == 3
    assert e["chamfer_mm"] == pytest.approx(0.5 * (np.mean(to_gt) + np.mean(to_pred)), rel=1e-9)
    assert e["accuracy_5mm"] == pytest.approx(100 / 3) and e["accuracy_10mm"] == pytest.approx(200 / 3)
    assert e["completeness_5mm"] == pytest.approx(100 / 3) and e["completeness_10mm"] == pytest.approx(200 / 3)
    empty = cm.cloud_errors(np.zeros((0, 3)), gt)
    assert empty["chamfer_mm"] == np.inf and empty["completeness_10mm"] == 0
    with pytest.raises(ValueError, match="empty"):
        cm.cloud_errors(pred, np.zeros((0, 3)))


def test_centroid_and_oriented_box_extents():
    rng = np.random.default_rng(0)
    corners = np.array([[x, y, z] for x in (-0.05, 0.05) for y in (-0.02, 0.02) for z in (-0.01, 0.01)])
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    a = corners @ q.T + [0.1, 0.2, 0.9]
    centre, axes, ext = oriented_box(a)  # geometry's: the node's markers use it without the metrics
    assert np.allclose(ext, [0.1, 0.04, 0.02]) and np.allclose(centre, [0.1, 0.2, 0.9])
    assert np.allclose(np.abs(axes @ q[:, 0]), [1, 0, 0], atol=1e-9)
    wider = corners * [1, 1.25, 1]  # 0.1 x 0.05 x 0.02
    assert cm.box_extent_error_mm(wider @ q.T, a) == pytest.approx(10 / 3)
    assert cm.centroid_error_mm(a + [0.003, -0.004, 0], a) == pytest.approx(5.0)


def test_parallel_grasp_closes_across_the_thinnest_horizontal_axis():
    x, z = np.meshgrid(np.linspace(0, 0.08, 17), np.linspace(1.0, 1.03, 7))
    top = np.stack([x.ravel(), np.full(x.size, -0.05), z.ravel()], 1)  # a 80 x 30 mm top face
    side = top + [0, 0.02, 0]  # and the same 20 mm lower: height is not horizontal
    pts = np.concatenate([top, side])
    up = np.array([0.0, -1.0, 0.0])  # camera optical frame: y points down
    width, centre = cm.parallel_grasp(pts, up)
    assert width == pytest.approx(0.03) and np.allclose(centre, [0.04, -0.04, 1.015])
    e = cm.grasp_errors_mm(pts + [0, 0, 0.002], pts, up)
    assert e["grasp_width_mm"] == pytest.approx(0.0, abs=1e-9) and e["grasp_centre_mm"] == pytest.approx(2.0)


def test_surface_samples_are_finer_than_the_pixel_grid_and_on_the_surface():
    K = np.array([[100.0, 0, 15.5], [0, 100.0, 15.5], [0, 0, 1]])
    depth = np.full((32, 32), 1.0, np.float32)
    mask = np.zeros((32, 32), bool)
    mask[8:18, 8:18] = True
    pts = cm.surface_samples(depth, mask, K, factor=2)
    interior = 8 * 8  # pixels whose 3x3 neighbourhood is on the object: 4 samples each
    assert len(pts) == 4 * interior + (100 - interior)
    assert np.allclose(pts[:, 2], 1.0)
    u = pts[:, 0] * 100 + 15.5
    assert u.min() == pytest.approx(8.0) and len(np.unique(np.round(u, 6))) > 10 + 8  # between pixel centres


def test_object_summaries_give_the_box_of_each_labelled_object():
    from scipy.spatial.transform import Rotation

    from bgprompt_core.rgbd.fusion import SOURCE_PREDICTED, SOURCE_SENSOR
    from bgprompt_core.frame.object_summary import summarize_objects

    K = np.array([[200.0, 0, 49.5], [0, 200.0, 39.5], [0, 0, 1]])
    depth = np.full((80, 100), np.nan, np.float32)
    inst = np.zeros((80, 100), np.int32)
    depth[10:30, 10:50] = 1.0  # a fronto-parallel rectangle: 40 x 20 px at 1 m = 0.195 x 0.095 m between centres
    inst[10:30, 10:50] = 3
    depth[50:60, 70:75] = 0.5
    inst[50:60, 70:75] = 4
    source = np.where(inst == 3, SOURCE_SENSOR, SOURCE_PREDICTED).astype(np.uint8)
    source[10:20, 10:50] = SOURCE_PREDICTED  # half of object 3 was filled
    out = summarize_objects(depth, inst, K, [3, 4, 9], source)
    assert [s.id for s in out] == [3, 4]  # no points for 9
    a = out[0]
    assert a.points == 800 and a.sensor_fraction == pytest.approx(0.5)
    assert np.allclose(a.box_extents, [39 / 200, 19 / 200, 0], atol=1e-6)
    assert np.allclose(a.centroid, [(29.5 - 49.5) / 200, (19.5 - 39.5) / 200, 1.0], atol=1e-6)
    axes = Rotation.from_quat(a.box_quaternion).as_matrix()  # columns: longest first
    assert abs(axes[:, 0] @ [1, 0, 0]) == pytest.approx(1, abs=1e-6)
    assert abs(axes[:, 1] @ [0, 1, 0]) == pytest.approx(1, abs=1e-6)
