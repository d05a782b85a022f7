"""Which of an object's RGB-D sensor readings are trustworthy enough to supervise a prompt (no ground truth).

Training from a robot's recordings (``bgprompt train --data BAG``) restricts the paper's loss (Eq. 3 + Eq. 4) to
the set V of object pixels returned here. A reading is left out when it is:

- a **hole**: no reading (0 / NaN);
- a **depth edge / flying pixel**: next to a depth step of more than ``edge_jump`` x z between valid neighbours
  (``rgbd.edges.depth_edges``), grown by ``edge_grow`` px, or on the mask's border (``border`` px: colour and
  depth mix the object and what lies behind it);
- **seen through**: at or behind the support plane fitted on the ring around the object (the table seen through
  glass; ``rgbd.planes.fit_plane`` / ``plane_depth``, the node's own test);
- **inconsistent with its neighbourhood**: farther than ``consistency`` + 3 sensor sigmas from the median of the
  valid readings of its ``window`` x ``window`` neighbourhood, or with fewer than ``min_neighbours`` of them
  (isolated speckles, reflection blobs smaller than the window).

Normals for Eq. 4 come from the sensor depth smoothed over the trusted pixels only (``sensor_normals``), so a
masked-out reading can never reach the loss, not even through the smoothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import cv2
import numpy as np
import torch

from bgprompt_core.method.config import ConfigError
from bgprompt_core.rgbd.edges import depth_edges
from bgprompt_core.rgbd.noise import SensorNoiseSettings
from bgprompt_core.rgbd.planes import SupportPlaneSettings, fit_plane, plane_depth, ring_mask
from bgprompt_core.geometry import camera_rays, normals_from_depth

REASONS = ("hole", "see_through", "edge", "inconsistent")


@dataclass(frozen=True)
class TrustConfig(SensorNoiseSettings, SupportPlaneSettings):
    """Rules that select an object's trustworthy sensor readings (metres, pixels of the recorded frame).

    Args:
        edge_jump (float, default 0.03): relative depth step between valid 4-neighbours that makes a depth edge.
        edge_grow (int, default 1): px, depth edges are grown by this much (flying pixels sit beside them).
        border (int, default 1): px of the mask's border left out (mixed pixels).
        ring, plane_tol, plane_iterations, min_plane_inliers, see_through_tol: the support-plane test, as the
            node's fusion runs it (``rgbd.planes.SupportPlaneSettings``).
        window (int, default 5): px, odd side of the neighbourhood of the consistency test.
        consistency (float, default 0.01): m (+ 3 sigmas), largest distance to the neighbourhood's median.
        min_neighbours (int, default 6): fewer valid readings in the window: an isolated reading, left out.
        noise_floor, noise_linear, noise_quadratic (float, default the d435-like camera's): the sensor's sigma(z).
        smooth_sigma (float, default 1.0): px at network resolution, the Gaussian that smooths the trusted depth
            before normals are taken (Eq. 4's N*); 0: no smoothing.
    """

    edge_jump: float = 0.03
    edge_grow: int = 1
    border: int = 1
    window: int = 5
    consistency: float = 0.01
    min_neighbours: int = 6
    smooth_sigma: float = 1.0

    def __post_init__(self) -> None:
        self.check_plane("trust")
        for name in ("edge_jump", "consistency"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"trust {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("edge_grow", "border", "min_neighbours", "smooth_sigma"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"trust {name} must be >= 0, got {getattr(self, name)!r}")
        if self.window < 3 or self.window % 2 == 0:
            raise ConfigError(f"trust window must be an odd number >= 3, got {self.window}")
        if self.min_neighbours > self.window**2:
            raise ConfigError(f"trust min_neighbours {self.min_neighbours} exceeds the window's {self.window**2} px")
        self.noise  # validates the noise terms

TRUST_FIELDS = tuple(f.name for f in fields(TrustConfig))


def _neighbourhood_median(z: np.ndarray, valid: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(median of the valid readings in each pixel's window (NaN: none), how many there are)."""
    r = window // 2
    padded = np.pad(np.where(valid, z, np.nan), r, constant_values=np.nan)
    stack = np.lib.stride_tricks.sliding_window_view(padded, (window, window)).reshape(*z.shape, -1)
    count = np.isfinite(stack).sum(-1)
    med = np.full(z.shape, np.nan)
    some = count > 0
    med[some] = np.nanmedian(stack[some], axis=-1)
    return med, count


def trusted_pixels(sensor: np.ndarray, obj: np.ndarray, K: np.ndarray, occupied: np.ndarray | None = None,
                   cfg: TrustConfig | None = None, rng: np.random.Generator | None = None
                   ) -> tuple[np.ndarray, dict[str, int]]:
    """The object's trustworthy readings (H, W) bool, a subset of ``obj``, and how many object pixels each rule
    left out (``REASONS``; a pixel counts under the first rule that rejects it) plus "object" and "trusted".

    sensor: metres, 0 / NaN = no reading; obj: the object's mask; occupied: every object of the frame (the
    support plane is sought away from all of them)."""
    cfg = cfg or TrustConfig()
    rng = np.random.default_rng(0) if rng is None else rng
    h, w = obj.shape
    sens = np.where(np.isfinite(sensor) & (sensor > 0), sensor, 0.0).astype(np.float64)
    counts = {"object": int(obj.sum()), **{k: 0 for k in REASONS}, "trusted": 0}
    rows, cols = np.nonzero(obj.any(1))[0], np.nonzero(obj.any(0))[0]
    if not len(rows):
        return np.zeros(obj.shape, bool), counts
    m = cfg.ring + cfg.window
    roi = (slice(max(rows[0] - m, 0), min(rows[-1] + 1 + m, h)), slice(max(cols[0] - m, 0), min(cols[-1] + 1 + m, w)))
    o, z = obj[roi], sens[roi]
    has = z > 0
    hole = o & ~has
    # depth edges (grown: flying pixels lie beside the step) and the mask's border (mixed pixels)
    edges = depth_edges(z, cfg.edge_jump)
    if cfg.edge_grow:
        edges = cv2.dilate(edges.astype(np.uint8), np.ones((2 * cfg.edge_grow + 1,) * 2, np.uint8)).astype(bool)
    if cfg.border:
        inner = cv2.erode(o.astype(np.uint8), np.ones((2 * cfg.border + 1,) * 2, np.uint8), borderValue=1)
        edges |= o & ~inner.astype(bool)
    # see-through: at or behind the support plane on the ring around the object (counted before edges: the
    # border of a see-through patch is a depth step too)
    rays = camera_rays(K, h, w)[roi].astype(np.float64)
    ring = ring_mask(o, cfg.ring, None if occupied is None else occupied[roi]) & has
    plane = fit_plane(rays[ring] * z[ring, None], cfg.plane_tol, cfg.plane_iterations, rng, cfg.min_plane_inliers)
    through = np.zeros_like(o)
    if plane is not None:
        zp = plane_depth(rays, plane[0], plane[1])
        through = o & has & (z >= zp - (cfg.see_through_tol + 3 * cfg.noise.sigma(zp)))
    edge = o & has & edges & ~through
    # consistency with the neighbourhood of the object's remaining readings
    candidate = o & has & ~edge & ~through
    med, count = _neighbourhood_median(z, candidate, cfg.window)
    tol = cfg.consistency + 3 * cfg.noise.sigma(z)
    with np.errstate(invalid="ignore"):
        consistent = (count >= cfg.min_neighbours) & (np.abs(z - med) <= tol)
    trusted = candidate & consistent
    counts.update(hole=int(hole.sum()), edge=int(edge.sum()), see_through=int(through.sum()),
                  inconsistent=int((candidate & ~consistent).sum()), trusted=int(trusted.sum()))
    out = np.zeros(obj.shape, bool)
    out[roi] = trusted
    return out, counts


def _gaussian(sigma: float, like: torch.Tensor) -> torch.Tensor:
    r = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-r, r + 1, dtype=like.dtype, device=like.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth_over(depth: torch.Tensor, weight: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalized convolution: the Gaussian average (``sigma`` px) of ``depth`` over the ``weight`` > 0.5 pixels
    only, at those pixels (0 elsewhere). A value outside ``weight`` never enters (it is zeroed, NaN included)."""
    w = (weight > 0.5).to(depth.dtype)
    z = torch.where(w > 0, depth, torch.zeros_like(depth))
    if sigma <= 0:
        return z
    k = _gaussian(sigma, depth)
    pad = len(k) // 2

    def conv(x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (pad, pad, 0, 0)), k.view(1, 1, 1, -1))
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, pad, pad)), k.view(1, 1, -1, 1))
        return x[:, 0]

    num, den = conv(z * w), conv(w)
    return torch.where(w > 0, num / den.clamp_min(1e-12), torch.zeros_like(z))


def sensor_normals(depth: torch.Tensor, weight: torch.Tensor, K: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eq. 4's target normals N* (N, H, W, 3) from the sensor depth smoothed over the trusted pixels; NaN where
    undefined (a pixel whose top or left neighbour is not trusted), so the loss leaves it out."""
    n, ok = normals_from_depth(smooth_over(depth, weight, sigma), K, weight)
    return torch.where(ok[..., None], n, torch.full_like(n, float("nan")))
