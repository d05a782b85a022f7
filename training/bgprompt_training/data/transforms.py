"""Sample transforms shared by all loaders (numpy samples, see schema.py); K is always kept exact."""
from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

from bgprompt_core.geometry import scale_intrinsics, shift_intrinsics
from bgprompt_core.frame.recenter import recenter_camera

BACKGROUNDS = ("white", "original", "noise", "folder")


def crop_to_square(s: dict) -> dict:
    """Centre crop to the shorter side (HM3D-ABO frames are 480x640 -> 480x480)."""
    h, w = s["depth"].shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    out = dict(s)
    for key in ("rgb", "depth", "mask", "alpha"):
        if key in s:
            out[key] = s[key][y0:y0 + side, x0:x0 + side]
    out["K"] = shift_intrinsics(s["K"], -x0, -y0)
    return out


def resize(s: dict, size: int | tuple[int, int]) -> dict:
    """Resize to (H, W): colour with area/linear filtering, depth and mask nearest."""
    h, w = (size, size) if isinstance(size, int) else size
    H, W = s["depth"].shape
    if (H, W) == (h, w):
        return s
    out = dict(s)
    interp = cv2.INTER_AREA if h < H else cv2.INTER_LINEAR
    out["rgb"] = cv2.resize(s["rgb"], (w, h), interpolation=interp)
    out["depth"] = cv2.resize(s["depth"], (w, h), interpolation=cv2.INTER_NEAREST)
    out["mask"] = cv2.resize(s["mask"].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    if "alpha" in s:
        out["alpha"] = cv2.resize(s["alpha"], (w, h), interpolation=interp)
    out["K"] = scale_intrinsics(s["K"], w / W, h / H)
    return out


class ReplaceBackground:
    """The paper's Table S3 baselines: white, the original background, uniform noise, a random image.

    Noise and images are drawn from ``rng`` seeded per sample id, so a data set looks the same
    every time it is read.
    """

    def __init__(self, mode: str = "white", folder: str | Path | None = None, seed: int = 0):
        if mode not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {mode!r}")
        if mode == "folder":
            exts = {".png", ".jpg", ".jpeg"}
            self.files = sorted(p for p in Path(folder or "").rglob("*") if p.suffix.lower() in exts)
            if not self.files:
                raise FileNotFoundError(f"no background images (png/jpg) under {folder}")
        self.mode, self.seed = mode, seed

    def __call__(self, s: dict) -> dict:
        if self.mode == "original":
            return s
        h, w = s["depth"].shape
        rng = np.random.default_rng([self.seed, zlib.crc32(str(s.get("id", "")).encode())])
        if self.mode == "white":
            bg = np.full((h, w, 3), 255, np.uint8)
        elif self.mode == "noise":
            bg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            img = cv2.imread(str(self.files[rng.integers(len(self.files))]), cv2.IMREAD_COLOR)
            bg = cv2.cvtColor(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        alpha = (s["alpha"].astype(np.float32) / 255.0 if "alpha" in s else s["mask"].astype(np.float32))[..., None]
        out = dict(s)
        out["rgb"] = np.clip(alpha * s["rgb"] + (1 - alpha) * bg + 0.5, 0, 255).astype(np.uint8)
        return out


class Recenter:
    """Augmentation / fix for non-centred objects: virtual camera rotation + zoom (bgprompt_core.frame.recenter)."""

    def __init__(self, span: float = 0.8, background: int = 255):
        self.span, self.background = span, background

    def __call__(self, s: dict) -> dict:
        cam = recenter_camera(s["mask"], s["K"], s["depth"].shape, self.span)
        valid = s["depth"] > 0
        depth, ok = cam.warp_depth(s["depth"], valid)
        out = dict(s)
        out["rgb"] = cam.warp_image(s["rgb"], border=(self.background,) * 3)
        out["mask"] = (cam.warp_image(s["mask"].astype(np.float32)) > 0.5) & ok
        out["depth"] = depth
        if "alpha" in s:
            out["alpha"] = cam.warp_image(s["alpha"])
        out["K"] = cam.K_new
        return out


class Compose:
    def __init__(self, *fns):
        self.fns = [f for f in fns if f is not None]

    def __call__(self, s: dict) -> dict:
        for f in self.fns:
            s = f(s)
        return s
