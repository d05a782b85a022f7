"""The renderer: exact geometry, both backends agree, determinism, CLI output."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bgprompt_core.geometry import normals_from_depth
from bgprompt_training.render.camera import View, intrinsics, look_at
from bgprompt_training.render.generate import Generator, RenderConfig, resolve_backend
from bgprompt_training.render.meshes import FAMILIES, box, random_shape, superquadric
from bgprompt_training.render.raster import Instance, render_numpy
from bgprompt_training.render.store import render_dataset

TEX = np.full((4, 4, 3), 200, np.uint8)


def _gl():
    name, renderer = resolve_backend("auto")
    if renderer is None:
        pytest.skip("OpenGL (EGL) backend unavailable on this machine: numpy backend only")
    return renderer


def _sphere_view(size=96, center=(0.05, -0.03, 0.0), radius=0.2):
    T = np.eye(4)
    T[:3, :3] *= radius
    T[:3, 3] = center
    view = View(intrinsics((size, size), 0.9 * size), look_at(np.array([0.0, 0.0, -1.0]), np.zeros(3)), size, size)
    return [Instance(superquadric(1, 1, 1, 1, 1, n=64), T, TEX, 1)], view


def _backproject(depth, K):
    v, u = np.nonzero(depth > 0)
    z = depth[v, u]
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)


def test_depth_backprojects_onto_the_true_sphere():
    inst, view = _sphere_view()
    frame = render_numpy(inst, view)
    pts_cam = _backproject(frame.depth, view.K)
    world = (pts_cam - view.cam_from_world[:3, 3]) @ view.cam_from_world[:3, :3]  # inverse rigid transform
    dist = np.linalg.norm(world - np.array([0.05, -0.03, 0.0]), axis=1)
    assert len(dist) > 500
    assert np.abs(dist - 0.2).max() < 0.2 * 2e-3  # chord error of the 64-segment tessellation


def test_mask_is_depth_support_and_normals_match_depth_normals():
    gen = Generator(RenderConfig(size=96, seed=3, families=("superquadric",)), "numpy")
    s = gen.sample(0)
    assert np.array_equal(s["mask"], s["depth"] > 0)
    n_depth, ok = normals_from_depth(torch.from_numpy(s["depth"])[None], torch.from_numpy(s["K"]),
                                     torch.from_numpy(s["mask"].astype(np.float32))[None])
    interior = cv2.erode(s["mask"].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ok[0].numpy()
    cos = (n_depth[0].numpy()[interior] * s["normals"][interior]).sum(-1)
    assert np.median(cos) > 0.995 and (cos > 0.9).mean() > 0.95
    assert np.allclose(np.linalg.norm(s["normals"][s["mask"]], axis=-1), 1, atol=1e-4)
    assert (s["normals"][s["mask"]][:, 2] < 0.05).all()  # facing the camera


def test_intrinsics_match_projection_of_a_known_point():
    p = np.array([0.1, 0.05, 0.0])
    T = np.eye(4)
    T[:3, 3] = p
    view = View(intrinsics((120, 160), 150.0), look_at(np.array([0.2, 0.4, -1.2]), np.zeros(3)), 120, 160)
    frame = render_numpy([Instance(box(0.01, 0.01, 0.01), T, TEX, 1)], view)
    ys, xs = np.nonzero(frame.instance == 1)
    pc = view.cam_from_world[:3, :3] @ p + view.cam_from_world[:3, 3]
    u, v = view.K[0, 0] * pc[0] / pc[2] + view.K[0, 2], view.K[1, 1] * pc[1] / pc[2] + view.K[1, 2]
    assert abs(xs.mean() - u) < 0.5 and abs(ys.mean() - v) < 0.5


def test_gl_and_numpy_backends_agree():
    gl = _gl()
    for seed in range(3):
        inst, view = _sphere_view(center=(0.02 * seed, 0, 0))
        rng = np.random.default_rng(seed)
        mesh = random_shape(rng)
        T = np.eye(4)
        T[:3, :3] *= 0.15
        T[:3, 3] = (0.12, 0.05, 0.1)
        inst.append(Instance(mesh, T, (rng.random((8, 8, 3)) * 255).astype(np.uint8), 2))
        a, b = render_numpy(inst, view), gl.render(inst, view)
        both = (a.depth > 0) & (b.depth > 0)
        assert ((a.depth > 0) != (b.depth > 0)).mean() < 0.005
        assert np.abs(a.depth - b.depth)[both].max() < 1e-4 * a.depth[both].max()
        same = both & (a.instance == b.instance)
        assert same.sum() > 0.99 * both.sum()
        assert np.abs(a.normals - b.normals)[same].max() < 1e-3


def test_scene_gl_and_numpy_agree_and_cover_every_pixel():
    _gl()
    cfg = RenderConfig(kind="scenes", size=64, seed=5)
    a, b = Generator(cfg, "numpy").sample(0), Generator(cfg, "gl").sample(0)
    assert (a["depth"] > 0).all() and (b["depth"] > 0).all()  # closed room: no blank pixels
    close = np.abs(a["depth"] - b["depth"]) < 1e-3 * a["depth"]
    assert close.mean() > 0.98  # differences only on silhouette pixels


def test_scene_closeups_bring_the_target_object_near():
    far, near = RenderConfig(kind="scenes", size=48, seed=3), RenderConfig(kind="scenes", size=48, seed=3, closeup=1.0)
    gf, gn = Generator(far, "numpy"), Generator(near, "numpy")
    for i in range(3):
        a, b = gf.sample(i), gn.sample(i)
        # the eye slid toward the target along its ray: the foreground is nearer
        assert np.median(b["depth"][b["mask"]]) < np.median(a["depth"][a["mask"]])
        assert np.median(b["depth"][b["mask"]]) < 1.1  # at most 2.5 r + 0.3 m from the object centre (r <= 0.3)
    with pytest.raises(ValueError, match="closeup"):
        RenderConfig(kind="scenes", closeup=1.5)


def test_every_family_renders_and_one_sample_depends_on_seed_and_index_only(tmp_path):
    for fam in FAMILIES:
        s = Generator(RenderConfig(size=48, seed=1, families=(fam,)), "numpy").sample(2)
        assert s["mask"].sum() > 20, fam
    cfg = RenderConfig(size=48, seed=7)
    render_dataset(cfg, tmp_path / "a", 6, backend="numpy", shard_size=4, progress=False)
    render_dataset(cfg, tmp_path / "b", 6, backend="numpy", shard_size=4, progress=False)
    for name in ("shard-00000.npz", "shard-00001.npz", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    alone = Generator(cfg, "numpy").sample(5)
    with np.load(tmp_path / "a" / "shard-00001.npz") as f:
        assert np.array_equal(f["depth"][1], alone["depth"]) and np.array_equal(f["rgb"][1], alone["rgb"])


def test_real_mesh_folder_with_a_bad_file_is_skipped_with_a_warning(tmp_path):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    (meshes / "broken.obj").write_text("this is not an obj\nf 1 2 3\n")
    (meshes / "tri.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n")
    gen = Generator(RenderConfig(size=48, seed=0, meshes=str(meshes)), "numpy")
    samples = [gen.sample(i) for i in range(4)]
    assert all(s["mask"].sum() > 10 for s in samples)
    assert gen.skipped_meshes == ["broken.obj"]


def test_cli_render_writes_manifest_and_preview(tmp_path):
    exe = Path(sys.executable).parent / "bgprompt"
    out = tmp_path / "objs"
    proc = subprocess.run([str(exe), "render", "objects", "--out", str(out), "--count", "3", "--size", "40",
                           "--backend", "numpy", "--preview", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 3 and manifest["generator"]["size"] == 40 and manifest["units"] == "metres"
    assert "0 = no surface" in manifest["conventions"]["depth"]
    img = cv2.imread(str(out / "preview.png"))
    assert img.shape == (2 * 40, 4 * 40, 3)
