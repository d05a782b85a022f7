"""Loaders for the paper's data sets, each in the shared sample schema (schema.py).

Every loader documents the exact layout it reads; tests write a tiny fixture in that layout. Bad
samples (missing files, NaN depth, empty masks, wrong sizes) raise ``BadSample`` naming the file, or
with ``skip_bad=True`` are skipped (the next sample is returned) and counted in ``skipped``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..render.camera import ABO_FOCAL_512
from .schema import BadSample, to_torch, validate



def read_exr(path: Path) -> np.ndarray:
    """First of the Y/R/Z/depth channels of an EXR file as float32 (OpenEXR; OpenCV 5 has no EXR)."""
    import OpenEXR

    if not path.is_file():
        raise BadSample(f"{path}: missing")
    try:
        with OpenEXR.File(str(path)) as f:
            ch = f.channels()
            for name in ("Y", "R", "Z", "depth", "Depth", "V"):
                if name in ch:
                    return np.asarray(ch[name].pixels, np.float32)
            first = next(iter(ch.values())).pixels
            return np.asarray(first[..., 0] if first.ndim == 3 else first, np.float32)
    except BadSample:
        raise
    except Exception as exc:
        raise BadSample(f"{path}: unreadable EXR ({exc})") from exc


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise BadSample(f"{path}: missing or unreadable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise BadSample(f"{path}: missing or unreadable mask")
    return img > 127


def read_K(path: Path) -> np.ndarray:
    if not path.is_file():
        raise BadSample(f"{path}: missing intrinsics")
    K = np.loadtxt(path, dtype=np.float64)
    if K.shape == (4, 4):
        K = K[:3, :3]
    if K.shape != (3, 3):
        raise BadSample(f"{path}: intrinsics must be 3x3 or 4x4, got {K.shape}")
    return K


class _Records(Dataset):
    """A list of records, a reader turning one into a numpy sample, shared validation and transforms."""

    def __init__(self, records: list, transform: Callable[[dict], dict] | None, skip_bad: bool, name: str):
        if not records:
            raise FileNotFoundError(f"{name}: no samples found (see the loader's docstring for the layout)")
        self.records, self.transform, self.skip_bad = records, transform, skip_bad
        self.skipped: set[int] = set()

    def read(self, record) -> dict:
        raise NotImplementedError

    def origin(self, record) -> str:
        return str(record)

    def __len__(self) -> int:
        return len(self.records)

    def raw(self, i: int) -> dict:
        return validate(self.read(self.records[i]), self.origin(self.records[i]))

    def __getitem__(self, i: int) -> dict:
        for k in range(len(self.records)):
            j = (i + k) % len(self.records)
            try:
                sample = self.raw(j)
                break
            except (BadSample, FileNotFoundError, OSError, ValueError):
                if not self.skip_bad:
                    raise
                self.skipped.add(j)
        else:
            raise BadSample("every sample of this data set is bad")
        if self.transform is not None:
            sample = self.transform(sample)
        return to_torch(sample)


class ABORenders(_Records):
    """ABO renders (Collins et al.): 512x512 views on the upper icosphere, focal 443.405 px.

    Layout::

        ROOT/<object_id>/render/<view>.jpg|png      colour
        ROOT/<object_id>/depth/<view>.exr           z-depth in metres (channel Y or R); 0 or inf = background
        ROOT/<object_id>/segmentation/<view>.png    optional object mask (else depth validity)
        ROOT/<object_id>/normal/<view>.png          normals (not read: no sample carries normals, schema.py)
    """

    def __init__(self, root, transform=None, skip_bad=False):
        root = Path(root)
        recs = sorted(p for p in root.glob("*/render/*") if p.suffix.lower() in (".jpg", ".png"))
        super().__init__(recs, transform, skip_bad, f"ABO renders at {root}")

    def read(self, rgb_path: Path) -> dict:
        obj, view = rgb_path.parents[1], rgb_path.stem
        depth = read_exr(obj / "depth" / f"{view}.exr")
        depth = np.where(np.isfinite(depth) & (depth < 1e4), depth, 0).astype(np.float32)
        seg = obj / "segmentation" / f"{view}.png"
        mask = read_mask(seg) if seg.is_file() else depth > 0
        rgb = read_rgb(rgb_path)
        h, w = depth.shape
        f = ABO_FOCAL_512 * w / 512
        sample = {"rgb": rgb, "depth": depth, "mask": mask & (depth > 0),
                  "K": np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]]), "id": f"{obj.name}/{view}"}
        return sample


class HM3DABO(_Records):
    """HM3D-ABO (Yang et al.): ABO objects in HM3D scenes, 480x640 frames (crop to square with transforms).

    Layout::

        ROOT/<sequence>/intrinsic.txt               3x3 (or 4x4) K of every frame in the sequence
        ROOT/<sequence>/rgb/<frame>.png
        ROOT/<sequence>/depth/<frame>.exr           z-depth in metres, 0 = invalid
        ROOT/<sequence>/mask/<frame>.png            object mask
    """

    def __init__(self, root, transform=None, skip_bad=False):
        root = Path(root)
        super().__init__(sorted(root.glob("*/rgb/*.png")), transform, skip_bad, f"HM3D-ABO at {root}")

    def read(self, rgb_path: Path) -> dict:
        seq, frame = rgb_path.parents[1], rgb_path.stem
        return {"rgb": read_rgb(rgb_path), "depth": read_exr(seq / "depth" / f"{frame}.exr"),
                "mask": read_mask(seq / "mask" / f"{frame}.png"), "K": read_K(seq / "intrinsic.txt"),
                "id": f"{seq.name}/{frame}"}


class HNDR(_Records):
    """HNDR (Chugunov et al.): real captures; GT depth exported from each scene's trained HNDR model.

    Layout::

        ROOT/<scene>/rgb.png
        ROOT/<scene>/depth.npy      float32 z-depth in metres (0 or NaN = invalid)
        ROOT/<scene>/K.txt          3x3 intrinsics of rgb.png
        ROOT/<scene>/mask.png       object mask (e.g. from `rembg`; the paper segments HNDR with rembg)
    """

    def __init__(self, root, transform=None, skip_bad=False):
        root = Path(root)
        super().__init__(sorted(p.parent for p in root.glob("*/rgb.png")), transform, skip_bad, f"HNDR at {root}")

    def read(self, scene: Path) -> dict:
        if not (scene / "depth.npy").is_file():
            raise BadSample(f"{scene / 'depth.npy'}: missing")
        depth = np.load(scene / "depth.npy").astype(np.float32)
        return {"rgb": read_rgb(scene / "rgb.png"), "depth": np.nan_to_num(depth, nan=0.0),
                "mask": read_mask(scene / "mask.png"), "K": read_K(scene / "K.txt"), "id": scene.name}


class NpzDumps(_Records):
    """Pre-dumped samples (the authors dump Nerfies and Google Scanned Objects like this).

    Layout: ``ROOT/**/*.npz``, each with ``rgb`` (H, W, 3) uint8 or float in [0, 1], ``depth`` (H, W)
    z-depth, ``K`` (3, 3), and optionally ``mask`` (H, W) (else depth validity); other arrays (``normals``) are
    not read.
    """

    def __init__(self, root, transform=None, skip_bad=False):
        root = Path(root)
        super().__init__(sorted(root.rglob("*.npz")), transform, skip_bad, f"npz dumps at {root}")

    def read(self, path: Path) -> dict:
        try:
            with np.load(path) as f:
                d = {k: f[k] for k in f.files}
        except Exception as exc:
            raise BadSample(f"{path}: unreadable npz ({exc})") from exc
        for key in ("rgb", "depth", "K"):
            if key not in d:
                raise BadSample(f"{path}: missing array {key!r}")
        rgb = d["rgb"]
        if rgb.dtype != np.uint8:
            rgb = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
        depth = np.nan_to_num(d["depth"].astype(np.float32), nan=0.0)
        mask = d["mask"].astype(bool) if "mask" in d else depth > 0
        sample = {"rgb": rgb, "depth": depth, "mask": mask, "K": d["K"].astype(np.float64), "id": path.stem}
        return sample


class GoogleScannedObjects(Dataset):
    """Google Scanned Objects rendered on the fly with our renderer (views on the upper hemisphere).

    Layout (as downloaded and unzipped)::

        ROOT/<object>/meshes/model.obj   (+ model.mtl)
        ROOT/<object>/materials/textures/texture.png

    Sample ``i`` is a deterministic view of a mesh picked by (seed, i).
    """

    def __init__(self, root, count: int = 300, size: int = 256, seed: int = 1338, backend: str = "auto",
                 transform=None):
        from ..render.generate import Generator, RenderConfig

        if not list(Path(root).glob("*/meshes/model.obj")):
            raise FileNotFoundError(f"Google Scanned Objects at {root}: no */meshes/model.obj")
        self.gen = Generator(RenderConfig(kind="objects", size=size, seed=seed, meshes=str(root)), backend)
        self.count, self.transform = count, transform

    def __len__(self) -> int:
        return self.count

    def raw(self, i: int) -> dict:
        s = self.gen.sample(i)
        return validate({"rgb": s["rgb"], "depth": s["depth"], "mask": s["mask"], "K": s["K"], "alpha": s["alpha"],
                         "id": f"{s['object_id']}/{i}"}, f"GSO view {i}")

    def __getitem__(self, i: int) -> dict:
        s = self.raw(i)
        return to_torch(self.transform(s) if self.transform else s)


LOADERS = {"abo": ABORenders, "hm3d-abo": HM3DABO, "hndr": HNDR, "npz": NpzDumps, "gso": GoogleScannedObjects}
