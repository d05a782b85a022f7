"""A simulated active-stereo RGB-D depth sensor: what a robot's camera reports for a rendered scene.

Pure numpy functions, one per effect, composed by :func:`simulate`. Depth is float32 metres with 0 for
"no reading" (what a 16UC1 driver image holds, divided by 1000). Each effect follows a public figure:

- noise: stereo depth RMS error grows with z squared, ``sigma_z = z^2 * subpixel / (f * b)`` (Intel,
  "Tuning depth cameras for best performance", D400 series): f the imagers' focal length in pixels at the
  native resolution, b the baseline, subpixel the matcher's RMS disparity error (0.08 px typical);
- quantization: 1 mm steps (the 16UC1 depth unit of RealSense and most ROS drivers);
- range: readings closer than min-Z or beyond the usable range are dropped (D435 min-Z ~0.2 m at 848x480);
- projector / second-imager shadow: background pixels that the right imager cannot see next to a closer
  object have no depth; the band lies on the LEFT of objects and is ``f b (1/z_near - 1/z_far)`` pixels
  wide (Intel D400 datasheet: "left invalid depth band");
- depth edges: the matching window straddles a discontinuity, so a band of pixels there is invalid, and a
  fraction of it are "flying pixels" with depths between the two surfaces;
- materials: specular highlights saturate the IR pattern (holes), dark surfaces absorb it (holes), and
  transparent surfaces let the pattern through, so the sensor mostly reads the surface BEHIND them
  (wrong depth, not only missing); see e.g. ClearGrasp (Sajjan et al., ICRA 2020) for that failure.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config import ConfigError

MATERIALS = ("diffuse", "specular", "transparent", "dark")
DIFFUSE, SPECULAR, TRANSPARENT, DARK = range(4)


@dataclass(frozen=True)
class SensorPreset:
    """Parameters of a simulated depth camera (metres, pixels at the sensor's native resolution)."""

    name: str
    focal_px: float = 430.0  # imagers' focal length at the native resolution (D435 at 848x480: ~430 px)
    baseline: float = 0.050  # m between the stereo imagers (D435: 50 mm)
    subpixel: float = 0.08  # RMS disparity error in pixels
    quantum: float = 0.001  # m per depth unit
    min_range: float = 0.2
    max_range: float = 6.0
    edge_jump: float = 0.03  # relative depth jump that counts as a depth edge
    edge_band: int = 1  # invalid pixels on each side of a depth edge
    flying: float = 0.3  # fraction of edge-band pixels reading a depth between the two surfaces
    specular_holes: float = 0.5  # highlight intensity above which the reading is lost
    dark_holes: float = 0.6  # fraction of a dark surface with no reading
    transparent_behind: float = 0.8  # fraction of a transparent surface that reads what lies behind it
    blob_sigma: float = 3.0  # px: spatial correlation of material holes

    def __post_init__(self) -> None:
        for name in ("focal_px", "baseline", "quantum", "max_range", "blob_sigma"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"sensor {self.name}: {name} must be > 0")
        for name in ("flying", "specular_holes", "dark_holes", "transparent_behind"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"sensor {self.name}: {name} must lie in [0, 1]")
        if not 0 <= self.min_range < self.max_range:
            raise ConfigError(f"sensor {self.name}: need 0 <= min_range < max_range")

    def sigma(self, z: np.ndarray | float) -> np.ndarray | float:
        """RMS depth error at depth z (m): z^2 * subpixel / (f * b)."""
        return np.square(z) * self.subpixel / (self.focal_px * self.baseline)


PRESETS = {"d435-like": SensorPreset("d435-like")}
SENSORS = ("none", *PRESETS)


def preset(name: str) -> SensorPreset | None:
    """The preset called ``name``; None for 'none' (a perfect sensor)."""
    if name == "none":
        return None
    if name not in PRESETS:
        raise ConfigError(f"unknown sensor {name!r}; choose from {SENSORS}")
    return PRESETS[name]


def add_noise(z: np.ndarray, p: SensorPreset, rng: np.random.Generator) -> np.ndarray:
    """z + N(0, sigma(z)^2) where z > 0."""
    return np.where(z > 0, z + rng.standard_normal(z.shape) * p.sigma(z), 0.0)


def quantize(z: np.ndarray, quantum: float) -> np.ndarray:
    return np.round(z / quantum) * quantum


def stereo_shadow(z: np.ndarray, K: np.ndarray, baseline: float) -> np.ndarray:
    """Pixels the second imager (at +baseline along x) cannot see: occluded by something closer.

    A point at column u and depth z appears in the second view at ``u - f b / z``. It is hidden when a point
    to its right maps to the same place or further left there (running minimum from the right).
    """
    h, w = z.shape
    fx = float(K[0, 0])
    valid = z > 0
    disp = np.where(valid, fx * baseline / np.where(valid, z, 1.0), 0.0)
    x2 = np.where(valid, np.arange(w)[None, :] - disp, np.inf)
    right_min = np.minimum.accumulate(x2[:, ::-1], axis=1)[:, ::-1]  # min over columns >= u
    beyond = np.concatenate([right_min[:, 1:], np.full((h, 1), np.inf)], 1)  # min over columns > u
    return valid & (beyond <= x2 + 1e-9)  # coinciding in the second view: the closer point wins


def depth_edges(z: np.ndarray, jump: float) -> np.ndarray:
    """Pixels next to a depth discontinuity: a valid 4-neighbour whose depth differs by more than ``jump`` * z."""
    edge = np.zeros(z.shape, bool)
    for a, b, sl_a, sl_b in ((z[:, 1:], z[:, :-1], (slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                             (z[1:], z[:-1], (slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
        near = np.minimum(a, b)
        step = (a > 0) & (b > 0) & (np.abs(a - b) > jump * near)  # between two surfaces, not at a hole
        edge[sl_a] |= step
        edge[sl_b] |= step
    return edge


def correlated_holes(region: np.ndarray, fraction: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A spatially correlated subset of ``region`` holding ``fraction`` of its pixels (up to ties)."""
    out = np.zeros(region.shape, bool)
    n = int(region.sum())
    if n == 0 or fraction <= 0:
        return out
    field = cv2.GaussianBlur(rng.standard_normal(region.shape).astype(np.float32), (0, 0), sigma)
    values = field[region]
    k = int(round(fraction * n))
    if k >= n:
        return region.copy()
    if k == 0:
        return out
    threshold = np.partition(values, k - 1)[k - 1]
    out[region] = values <= threshold
    return out


def simulate(depth: np.ndarray, K: np.ndarray, p: SensorPreset | None, rng: np.random.Generator,
             material: np.ndarray | None = None, behind: np.ndarray | None = None,
             highlight: np.ndarray | None = None) -> np.ndarray:
    """The sensor's depth (float32 m, 0 = no reading) for ground-truth z-depth ``depth`` (0 = no surface).

    ``material``: per-pixel material code (MATERIALS order); ``behind``: z-depth of the scene without the
    transparent objects (what their pixels see through); ``highlight``: specular intensity in [0, 1].
    """
    z = np.asarray(depth, np.float64)
    if p is None:
        return z.astype(np.float32)
    mat = np.zeros(z.shape, np.uint8) if material is None else material
    seen = z.copy()
    glass = mat == TRANSPARENT
    if glass.any():
        if behind is None:
            raise ConfigError("transparent pixels need the depth behind them")
        through = correlated_holes(glass, p.transparent_behind, p.blob_sigma, rng)
        seen[through] = behind[through]
        seen[glass & ~through] = 0.0
    out = seen.copy()
    out[stereo_shadow(seen, K, p.baseline)] = 0.0
    edge = depth_edges(seen, p.edge_jump)
    if p.edge_band > 1:
        edge = cv2.dilate(edge.view(np.uint8), np.ones((2 * p.edge_band - 1,) * 2, np.uint8)).astype(bool)
    edge &= seen > 0
    fly = edge & (rng.random(z.shape) < p.flying)
    if fly.any():  # between the nearest and farthest surface of the 3x3 neighbourhood
        pos = np.where(seen > 0, seen, np.nan).astype(np.float32)
        lo = -cv2.dilate(np.nan_to_num(-pos, nan=-np.inf), np.ones((3, 3), np.uint8))
        hi = cv2.dilate(np.nan_to_num(pos, nan=-np.inf), np.ones((3, 3), np.uint8))
        t = rng.random(int(fly.sum()))
        out[fly] = lo[fly] + t * (hi[fly] - lo[fly])
    out[edge & ~fly] = 0.0
    out = quantize(add_noise(out, p, rng), p.quantum)
    out[(out < p.min_range) | (out > p.max_range)] = 0.0
    if highlight is not None:
        out[(mat == SPECULAR) & (highlight > p.specular_holes)] = 0.0
    out[correlated_holes(mat == DARK, p.dark_holes, p.blob_sigma, rng)] = 0.0
    return out.astype(np.float32)


def to_millimetres(z: np.ndarray) -> np.ndarray:
    """float metres (0 or NaN = none) -> 16UC1 millimetres (0 = none), saturating at 65535."""
    mm = np.round(np.nan_to_num(np.asarray(z, np.float64), nan=0.0) * 1000.0)
    return np.clip(mm, 0, 65535).astype(np.uint16)
