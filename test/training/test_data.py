"""Loaders read fixtures written in their documented layouts; transforms keep geometry exact."""

import cv2
import numpy as np
import pytest
import torch

from bgprompt_core.frame.recenter import recenter_camera, rotation_to_axis
from bgprompt_training.data.external import ABORenders, GoogleScannedObjects, HM3DABO, HNDR, NpzDumps
from bgprompt_training.data.open import open_dataset
from bgprompt_training.data.schema import BadSample
from bgprompt_training.data.transforms import Compose, Recenter, ReplaceBackground, crop_to_square, resize
from scenes import sphere_sample
from bgprompt_training.render.generate import RenderConfig
from bgprompt_training.render.store import render_dataset


def _write_exr(path, depth):
    import OpenEXR

    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                      {"Y": depth.astype(np.float32)}) as f:
        f.write(str(path))


def _scene(h=32, w=32):
    rgb, depth, mask, K = sphere_sample(h)
    return (rgb.transpose(1, 2, 0) * 255).astype(np.uint8), depth, mask.astype(bool), K


def _check(ds, n):
    assert len(ds) == n
    s = ds[0]
    assert s["image"].shape[0] == 3 and s["image"].dtype == torch.float32 and 0 <= s["image"].min() <= s["image"].max() <= 1
    assert s["mask"].shape == (1,) + s["depth"].shape and s["mask"].sum() > 0
    assert torch.all(s["depth"][s["mask"][0] > 0] > 0) and s["K"].shape == (3, 3)
    return s


def test_abo_layout(tmp_path):
    rgb, depth, mask, _ = _scene(64, 64)
    for obj in ("B00A", "B00B"):
        for view in ("0", "1"):
            for sub in ("render", "depth", "segmentation", "normal"):
                (tmp_path / obj / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / obj / "render" / f"{view}.jpg"), rgb[..., ::-1])
            _write_exr(tmp_path / obj / "depth" / f"{view}.exr", np.where(mask, depth, np.inf))
            cv2.imwrite(str(tmp_path / obj / "segmentation" / f"{view}.png"), mask.astype(np.uint8) * 255)
            cv2.imwrite(str(tmp_path / obj / "normal" / f"{view}.png"), np.full((64, 64, 3), (255, 128, 128), np.uint8))
    s = _check(ABORenders(tmp_path), 4)
    assert s["K"][0, 0].item() == pytest.approx(443.405 * 64 / 512, rel=1e-5)
    assert torch.allclose(s["depth"][s["mask"][0] > 0], torch.from_numpy(depth[mask]))
    assert "normals" not in s  # a layout's normals are not read: nothing uses them (Eq. 4 takes the depth's)


def test_hm3d_abo_layout_and_crop_to_square(tmp_path):
    rgb, depth, mask, K = _scene(48, 48)
    wide = lambda a: np.concatenate([np.zeros_like(a[:, :8]), a, np.zeros_like(a[:, :8])], 1)  # noqa: E731
    seq = tmp_path / "seq0"
    for sub in ("rgb", "depth", "mask"):
        (seq / sub).mkdir(parents=True)
    K_wide = K.copy()
    K_wide[0, 2] += 8
    np.savetxt(seq / "intrinsic.txt", K_wide)
    cv2.imwrite(str(seq / "rgb" / "000.png"), wide(rgb)[..., ::-1])
    _write_exr(seq / "depth" / "000.exr", wide(depth))
    cv2.imwrite(str(seq / "mask" / "000.png"), wide(mask.astype(np.uint8) * 255))
    s = _check(HM3DABO(tmp_path, transform=crop_to_square), 1)
    assert s["depth"].shape == (48, 48) and np.allclose(s["K"].numpy(), K, atol=1e-5)
    assert torch.allclose(s["depth"], torch.from_numpy(depth))


def test_hndr_and_npz_layouts(tmp_path):
    rgb, depth, mask, K = _scene()
    scene = tmp_path / "hndr" / "scene0"
    scene.mkdir(parents=True)
    cv2.imwrite(str(scene / "rgb.png"), rgb[..., ::-1])
    np.save(scene / "depth.npy", np.where(mask, depth, np.nan))
    np.savetxt(scene / "K.txt", K)
    cv2.imwrite(str(scene / "mask.png"), mask.astype(np.uint8) * 255)
    _check(HNDR(tmp_path / "hndr"), 1)
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "a.npz", rgb=rgb.astype(np.float32) / 255, depth=depth, K=K)
    s = _check(NpzDumps(tmp_path / "npz"), 1)
    assert torch.equal(s["mask"][0] > 0, torch.from_numpy(depth > 0))
    assert isinstance(open_dataset(f"npz:{tmp_path / 'npz'}"), NpzDumps)


def test_gso_layout_renders_views(tmp_path):
    obj = tmp_path / "Mug" / "meshes"
    obj.mkdir(parents=True)
    (obj / "model.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n")
    ds = GoogleScannedObjects(tmp_path, count=3, size=40, backend="numpy")
    _check(ds, 3)
    again = GoogleScannedObjects(tmp_path, count=3, size=40, backend="numpy")
    assert torch.equal(ds[1]["depth"], again[1]["depth"])  # a view is a function of (seed, index)
    assert not torch.equal(ds[0]["depth"], ds[1]["depth"])  # and views differ


def test_rendered_dataset_and_background_replacement(tmp_path):
    render_dataset(RenderConfig(size=40, seed=2), tmp_path, 3, backend="numpy", progress=False)
    ds = open_dataset(str(tmp_path))
    raw = ds.raw(1)
    for mode in ("white", "noise"):
        out = ReplaceBackground(mode)(dict(raw))
        obj = raw["alpha"] == 255
        assert np.array_equal(out["rgb"][obj], raw["rgb"][obj])  # object pixels untouched
        if mode == "white":
            assert (out["rgb"][raw["alpha"] == 0] == 255).all()
        else:
            assert out["rgb"][raw["alpha"] == 0].std() > 50
            assert np.array_equal(out["rgb"], ReplaceBackground(mode)(dict(raw))["rgb"])  # same every read


def test_bad_samples_are_named_or_skipped(tmp_path):
    rgb, depth, mask, K = _scene()
    root = tmp_path / "npz"
    root.mkdir()
    np.savez(root / "a_good.npz", rgb=rgb, depth=depth, K=K)
    np.savez(root / "b_nan.npz", rgb=rgb, depth=np.full_like(depth, np.nan), K=K)
    np.savez(root / "c_nodepth.npz", rgb=rgb, K=K)
    np.savez(root / "d_size.npz", rgb=rgb[:10], depth=depth, K=K)
    (root / "e_corrupt.npz").write_bytes(b"PK\x03\x04 truncated")
    strict = NpzDumps(root)
    for i, msg in ((1, "empty object mask"), (2, "missing array 'depth'"), (3, "does not match"), (4, "unreadable npz")):
        with pytest.raises(BadSample, match=msg) as err:
            strict[i]
        assert ".npz" in str(err.value)
    lenient = NpzDumps(root, skip_bad=True)
    assert torch.equal(lenient[1]["depth"], lenient[0]["depth"]) and lenient.skipped == {1, 2, 3, 4}


def test_resize_keeps_intrinsics_exact():
    rgb, depth, mask, K = _scene(64, 64)
    s = resize({"rgb": rgb, "depth": depth, "mask": mask, "K": K}, 32)
    assert s["depth"].shape == (32, 32)
    X = np.array([0.03, -0.02, 1.0])
    uv = lambda K: (K @ X)[:2] / X[2]  # noqa: E731
    assert np.allclose(uv(s["K"]), (uv(K) + 0.5) * 0.5 - 0.5)


def test_recentering_keeps_backprojected_points_and_inverts():
    size, c, r = 96, np.array([0.25, -0.15, 1.2]), 0.15
    rgb, depth, mask, K = sphere_sample(size, radius=r, distance=1.0)
    # move the sphere off-centre: render it analytically again at c
    f = K[0, 0]
    v, u = np.mgrid[0:size, 0:size].astype(float)
    d = np.stack([(u - K[0, 2]) / f, (v - K[1, 2]) / f, np.ones_like(u)], -1)
    dn = d / np.linalg.norm(d, axis=-1, keepdims=True)
    b = dn @ c
    disc = b**2 - (c @ c - r**2)
    hit = disc > 0
    depth = np.where(hit, (b - np.sqrt(np.clip(disc, 0, None))) * dn[..., 2], 0).astype(np.float32)
    cam = recenter_camera(hit, K, (size, size), span=0.8)
    new_depth, ok = cam.warp_depth(depth, hit)
    assert ok.sum() > 2 * hit.sum()  # zoomed in
    vv, uu = np.nonzero(ok)
    z = new_depth[vv, uu]
    X_new = np.stack([(uu - cam.K_new[0, 2]) / cam.K_new[0, 0] * z, (vv - cam.K_new[1, 2]) / cam.K_new[1, 1] * z, z], 1)
    X_old = X_new @ cam.R  # R^T X
    assert np.abs(np.linalg.norm(X_old - c, axis=1) - r).max() < 2e-3 * r * 10
    assert np.median(np.abs(np.linalg.norm(X_old - c, axis=1) - r)) < 1e-3 * r
    ys, xs = np.nonzero(ok)
    assert abs(xs.mean() - (size - 1) / 2) < 1.5 and abs(ys.mean() - (size - 1) / 2) < 1.5  # centred
    back, ok_back = cam.unwarp_depth(new_depth, ok)
    inner = cv2.erode(hit.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ok_back
    assert np.abs(back[inner] - depth[inner]).max() < 2e-3


def test_rotation_to_axis():
    ray = np.array([0.3, -0.2, 1.0])
    R = rotation_to_axis(ray)
    assert np.allclose(R @ ray / np.linalg.norm(ray), [0, 0, 1]) and np.allclose(R @ R.T, np.eye(3))


def test_recenter_transform_on_an_offcentre_render(tmp_path):
    render_dataset(RenderConfig(size=64, seed=4, offcenter=0.6), tmp_path, 2, backend="numpy", progress=False)
    raw = open_dataset(str(tmp_path)).raw(0)
    out = Compose(Recenter(0.8), ReplaceBackground("white"))(dict(raw))
    ys, xs = np.nonzero(out["mask"])
    assert abs(xs.mean() - 31.5) < 3 and abs(ys.mean() - 31.5) < 3
