"""Intrinsics under resize/pad, back-projection and normals against analytic geometry."""
import numpy as np
import pytest
import torch

from bgprompt_core import geometry


def _K(fx=500.0, fy=480.0, cx=319.5, cy=239.5):
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def _project(K, pts):
    uvw = pts @ K.T
    return uvw[:, :2] / uvw[:, 2:]


def test_letterbox_intrinsics_match_resized_projection():
    K = _K()
    from bgprompt_core.frame.views import Letterbox

    lb = Letterbox(480, 640, 256, 256)
    rh, rw = lb.resized
    top, left = lb.offset
    assert (rh, rw) == (192, 256) and (top, left) == (32, 0)
    pts = np.random.default_rng(0).uniform([-1, -1, 1], [1, 1, 4], size=(50, 3))
    uv = _project(K, pts)
    # independent: pixel centres map by u' = s(u + 0.5) - 0.5, then shift by the padding
    expect = np.stack([rw / 640 * (uv[:, 0] + 0.5) - 0.5 + left, rh / 480 * (uv[:, 1] + 0.5) - 0.5 + top], 1)
    assert np.allclose(_project(lb.intrinsics(K), pts), expect, atol=1e-9)


def test_backproject_inverts_projection():
    K = _K(100, 110, 31.5, 23.5)
    depth = torch.rand(1, 48, 64, dtype=torch.float64) + 1
    pts = geometry.backproject(depth, torch.from_numpy(K))[0].reshape(-1, 3).numpy()
    v, u = np.mgrid[0:48, 0:64]
    assert np.allclose(_project(K, pts), np.stack([u.ravel(), v.ravel()], 1), atol=1e-9)
    assert np.allclose(pts[:, 2], depth.numpy().ravel())


def test_a_box_backprojects_bit_exactly_like_its_part_of_the_whole_image():
    """Issue 30: one back-projection for whole images and objects' boxes (``origin``), with a skewed K whose
    principal point is not on the pixel grid; nothing of a box goes into the rays cache."""
    rng = np.random.default_rng(3)
    K = np.array([[151.3, 0.7, 81.37], [0, 149.9, 58.61], [0, 0, 1]])
    depth = rng.uniform(0.3, 2.0, (120, 160)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = np.nan
    whole = geometry.backproject_np(depth, K)
    cached = geometry.rays_cache_bytes()
    for box in ((slice(0, 120), slice(0, 160)), (slice(17, 60), slice(90, 160)), (slice(119, 120), slice(3, 4))):
        got = geometry.backproject_np(depth[box], K, origin=(box[0].start, box[1].start))
        assert got.dtype == np.float32 and got.tobytes() == whole[box].tobytes()
    assert geometry.rays_cache_bytes() == cached


def test_normals_of_tilted_plane_match_analytic_normal():
    K = _K(120, 120, 40, 30)
    n_true = np.array([0.3, -0.2, -1.0])
    n_true /= np.linalg.norm(n_true)
    d0 = 2.0  # plane n.X = -d0 ... points X with n_true . X = n_true . (0, 0, d0)
    v, u = np.mgrid[0:60, 0:80]
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    z = (n_true @ np.array([0, 0, d0])) / (rays @ n_true)  # z-depth along each ray
    n, ok = geometry.normals_from_depth(torch.from_numpy(z)[None], torch.from_numpy(K))
    assert ok[0, 1:, 1:].all() and not ok[0, 0].any() and not ok[0, :, 0].any()
    assert np.allclose(n[0, 1:, 1:].numpy(), n_true, atol=1e-6)  # faces the camera (n_z < 0)


def test_normals_undefined_next_to_invalid_pixels():
    depth = torch.ones(1, 6, 6)
    valid = torch.ones(1, 6, 6)
    valid[0, 3, 3] = 0
    _, ok = geometry.normals_from_depth(depth, torch.from_numpy(_K(10, 10, 3, 3)), valid)
    assert not ok[0, 3, 3] and not ok[0, 4, 3] and not ok[0, 3, 4] and ok[0, 4, 4]


@pytest.mark.parametrize("bad", [np.full((3, 3), np.nan), np.zeros((3, 3)), np.eye(2)])
def test_bad_intrinsics_rejected(bad):
    with pytest.raises(ValueError):
        geometry.check_intrinsics(bad)


def test_the_camera_rays_cache_is_capped_by_bytes_not_entries():
    """Nine 2048x1536 frames with a K that drifts every frame kept 9 x 36 MiB (and nine 4096x4096 ones 1.7 GiB): the
    cache now holds at most 128 MiB (RAYS_CACHE_BYTES; the latest rays always), least recently used out first."""
    from bgprompt_core import geometry

    def cached() -> int:  # what the cache keeps alive, read off the cache itself
        return sum(r.nbytes for r in geometry._RAYS.values())

    geometry._RAYS.clear()
    h, w = 1536, 2048
    first = np.array([[1000.0, 0, 1023.5], [0, 1000.0, 767.5], [0, 0, 1]])
    rays = geometry.camera_rays(first, h, w)
    assert geometry.camera_rays(first.copy(), h, w) is rays  # the same camera: served from the cache
    for i in range(1, 9):
        K = first.copy()
        K[0, 0] += 0.01 * i  # auto-calibration drift
        geometry.camera_rays(K, h, w)
        assert cached() <= 128 * 2**20, f"{cached() / 2**20:.0f} MiB kept after {i + 1} frames"
    assert geometry.camera_rays(first, h, w) is not rays  # evicted, recomputed equal
    assert np.array_equal(geometry.camera_rays(first, h, w), rays)
    big = np.array([[3000.0, 0, 2047.5], [0, 3000.0, 2047.5], [0, 0, 1]])
    huge = geometry.camera_rays(big, 4096, 4096)  # alone over the cap: still cached, everything else out
    assert geometry.camera_rays(big, 4096, 4096) is huge and cached() == geometry.rays_cache_bytes() == huge.nbytes
    geometry._RAYS.clear()
