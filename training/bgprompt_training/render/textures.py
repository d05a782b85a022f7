"""Procedural textures (checker, stripes, smooth noise, dots, wood-like rings) and material images."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bgprompt_core.method.config import ConfigError

PATTERNS = ("solid", "checker", "stripes", "noise", "dots", "rings")


def _colors(rng: np.random.Generator, n: int) -> np.ndarray:
    hsv = np.stack([rng.uniform(0, 180, n), rng.uniform(40, 230, n), rng.uniform(60, 250, n)], -1)
    return cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0].astype(np.float64)


def procedural_texture(rng: np.random.Generator, size: int = 128, pattern: str | None = None) -> np.ndarray:
    """(size, size, 3) uint8 texture of a random pattern and palette."""
    pattern = pattern or PATTERNS[rng.integers(len(PATTERNS))]
    c = _colors(rng, 2)
    v, u = np.mgrid[0:size, 0:size] / size
    if pattern == "solid":
        t = np.zeros((size, size))
    elif pattern == "checker":
        k = rng.integers(2, 12)
        t = ((np.floor(u * k) + np.floor(v * k)) % 2).astype(float)
    elif pattern == "stripes":
        k, ang = rng.integers(2, 16), rng.uniform(0, np.pi)
        t = (np.sin((u * np.cos(ang) + v * np.sin(ang)) * 2 * np.pi * k) > 0).astype(float)
    elif pattern == "noise":
        small = rng.random((rng.integers(3, 10),) * 2)
        t = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
    elif pattern == "dots":
        k = rng.integers(3, 10)
        t = ((((u * k) % 1 - 0.5) ** 2 + ((v * k) % 1 - 0.5) ** 2) < rng.uniform(0.03, 0.15)).astype(float)
    elif pattern == "rings":
        k = rng.uniform(4, 20)
        t = 0.5 + 0.5 * np.sin(np.hypot(u - rng.random(), v - rng.random()) * 2 * np.pi * k + 3 * u)
    else:
        raise ConfigError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    img = c[0] * (1 - t[..., None]) + c[1] * t[..., None]
    img += rng.normal(0, 4, img.shape)  # a little grain
    return np.clip(img, 0, 255).astype(np.uint8)


class MaterialImages:
    """Texture images from a folder (PNG/JPG), loaded lazily and cached, chosen by the rng."""

    def __init__(self, folder: str | Path, size: int = 256):
        exts = {".png", ".jpg", ".jpeg"}
        self.files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in exts)
        if not self.files:
            raise FileNotFoundError(f"no texture images (png/jpg) under {folder}")
        self.size = size
        self._cache: dict[int, np.ndarray] = {}

    def pick(self, rng: np.random.Generator) -> np.ndarray:
        i = int(rng.integers(len(self.files)))
        if i not in self._cache:
            img = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)
            if img is None:
                raise ConfigError(f"unreadable texture image {self.files[i]}")
            self._cache[i] = cv2.cvtColor(cv2.resize(img, (self.size, self.size)), cv2.COLOR_BGR2RGB)
        return self._cache[i]
