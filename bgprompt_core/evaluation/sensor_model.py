"""Simulated RGB-D depth cameras: what a robot's camera reports for a rendered scene (a family of presets).

Pure numpy functions, one per effect, composed by :func:`simulate`. Depth is float32 metres with 0 for
"no reading" (what a 16UC1 driver image holds, divided by 1000). Presets (``PRESETS``):

- ``d435-like``: an active-stereo camera on friendly objects (the first model; its figures unchanged);
- ``harsh-stereo``: the same kind of camera on the objects that defeat it in practice: metal loses most of
  its readings in large blobs touching the silhouette and reads reflections 3-20 cm behind the surface,
  black plastic loses 40-90% in ragged patterns, glass mixes surface, behind-surface and missing readings;
- ``tof-like``: a time-of-flight camera (Azure Kinect-like): noise a floor plus a share of the distance and a
  smooth systematic error, multipath that reads concave regions too far, flying (mixed) pixels at depth
  edges, dark surfaces lost or noisy for lack of signal, glass read through or mixed, no stereo shadow.

Each effect follows a public figure:

- stereo noise: ``sigma_z = z^2 * subpixel / (f * b)`` (Intel, "Tuning depth cameras for best performance",
  D400 series; 0.08 px typical subpixel error); ToF noise and systematic error: Azure Kinect DK hardware
  specification (random error std <= 17 mm, systematic < 11 mm + 0.1% of the distance), confirmed by
  Tolgyessy et al., "Evaluation of the Azure Kinect and its comparison to Kinect V1 and V2", Sensors 21(2):413,
  2021 (which also measures multipath and flying pixels, and reflectivity on 18 materials);
- quantization: 1 mm steps (the 16UC1 depth unit of RealSense, Azure Kinect and most ROS drivers);
- range: readings closer than min-Z or beyond the usable range are dropped (D435 min-Z ~0.2 m at 848x480);
- projector / second-imager shadow (stereo only): background pixels the right imager cannot see next to a
  closer object have no depth; the band lies LEFT of objects, ``f b (1/z_near - 1/z_far)`` px wide (Intel
  D400 datasheet: "left invalid depth band");
- depth edges: the matching window (stereo) or the pixel's footprint (ToF: "mixed" or "flying" pixels, PMD's
  flying-pixel FAQ; the Azure Kinect depth-camera documentation invalidates them) straddles a discontinuity:
  a band there is invalid, and a share reads depths between the two surfaces;
- multipath (ToF): light reaching a pixel over several bounces lengthens the measured path, so inside corners
  and concave surfaces read too far (overestimation; e.g. the Azure Kinect depth-camera documentation,
  "multi-path interference"; Nuvoton's ToF module manual);
- materials: specular highlights saturate the pattern (holes) and mirror-like metal shows the projector's dots
  reflected from elsewhere, so whole regions are lost or read wrong depths behind the surface (Feldman et al.,
  "Depth completion with RGB prior", 2020, on reflective industrial parts; Sun et al., DITR, 2024); dark
  surfaces absorb the pattern; transparent surfaces let it through, so the camera mostly reads the surface
  BEHIND them, sometimes the glass itself or a mix (ClearGrasp, Sajjan et al., ICRA 2020; Carvalho et al.,
  "An experimental assessment of depth estimation in transparent and translucent scenes for Intel RealSense
  D415, SR305 and L515", Sensors 22(19):7378, 2022).

The rates of ``harsh-stereo`` (specular coverage near 40%, reflections 3-20 cm behind, dark 40-90% lost) are
those the independent check of issue 24 describes for real active-stereo cameras; they are drawn per object,
so a test counts them per object (test/test_sensor_model.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from bgprompt_core.method.config import ConfigError
from bgprompt_core.rgbd.edges import depth_edges
from bgprompt_core.rgbd.noise import DepthNoise

MATERIALS = ("diffuse", "specular", "transparent", "dark")
DIFFUSE, SPECULAR, TRANSPARENT, DARK = range(4)
KINDS = ("active-stereo", "tof")


def _range(name: str, value: tuple[float, float], hi: float = 1.0) -> None:
    lo_, hi_ = value
    if not 0 <= lo_ <= hi_ <= hi:
        raise ConfigError(f"sensor: {name} must be a range (lo, hi) with 0 <= lo <= hi <= {hi}, got {value}")


@dataclass(frozen=True)
class SensorPreset:
    """Parameters of a simulated depth camera (metres, pixels at the sensor's native resolution).

    Ranges ``(lo, hi)`` are drawn uniformly per object; fractions are of the object's pixels.
    """

    name: str
    kind: str = "active-stereo"  # "active-stereo" (projector + two imagers: shadow band) or "tof"
    focal_px: float = 430.0  # imagers' focal length at the native resolution (D435 at 848x480: ~430 px)
    baseline: float = 0.050  # m between the stereo imagers (D435: 50 mm)
    subpixel: float = 0.08  # RMS disparity error in pixels (stereo); 0 for ToF
    noise_floor: float = 0.0  # m, added to sigma at any depth (ToF)
    noise_linear: float = 0.0  # share of the depth added to sigma (ToF)
    systematic: float = 0.0  # m, amplitude of a smooth per-frame depth bias (ToF's systematic error)
    quantum: float = 0.001  # m per depth unit
    min_range: float = 0.2
    max_range: float = 6.0
    edge_jump: float = 0.03  # relative depth jump that counts as a depth edge
    edge_band: int = 1  # invalid pixels on each side of a depth edge
    flying: float = 0.3  # fraction of edge-band pixels reading a depth between the two surfaces
    multipath: float = 0.0  # ToF: gain of the concavity (z - its edge-preserving local mean) added as bias
    multipath_max: float = 0.02  # m, the largest multipath bias
    specular_holes: float = 0.5  # highlight intensity above which the reading is lost
    specular_loss: tuple[float, float] = (0.0, 0.0)  # share of a specular object lost in large blobs
    silhouette_bias: float = 2.0  # how strongly those blobs hug the silhouette (0: anywhere)
    blob_scale: float = 0.25  # blob size, a fraction of the object's equivalent diameter
    reflections: tuple[float, float] = (0.0, 0.0)  # share of a specular object reading a reflection
    reflection_depth: tuple[float, float] = (0.03, 0.20)  # m behind the surface
    dark_holes: float = 0.6  # fraction of a dark surface with no reading (d435-like: one blob field)
    dark_loss: tuple[float, float] | None = None  # per-object range instead of dark_holes
    dark_ragged: float = 0.0  # 0: smooth blobs; 1: pixel-scale ragged holes
    dark_noise_gain: float = 1.0  # sigma multiplier on dark surfaces (little signal)
    transparent_behind: float = 0.8  # fraction of a transparent surface that reads what lies behind it
    transparent_surface: float = 0.0  # ... that reads the glass itself
    transparent_mixed: float = 0.0  # ... that reads a depth between the glass and what lies behind it
    blob_sigma: float = 3.0  # px: spatial correlation of material holes
    sources: tuple[str, ...] = field(default=(), compare=False)  # the public figures this preset follows

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"sensor {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("focal_px", "baseline", "quantum", "max_range", "blob_sigma", "blob_scale", "multipath_max"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"sensor {self.name}: {name} must be > 0")
        for name in ("subpixel", "noise_floor", "noise_linear", "systematic", "multipath", "silhouette_bias",
                     "dark_noise_gain"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"sensor {self.name}: {name} must be >= 0")
        for name in ("flying", "specular_holes", "dark_holes", "dark_ragged", "transparent_behind",
                     "transparent_surface", "transparent_mixed"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"sensor {self.name}: {name} must lie in [0, 1]")
        if self.transparent_behind + self.transparent_surface + self.transparent_mixed > 1 + 1e-9:
            raise ConfigError(f"sensor {self.name}: transparent shares add up to more than 1")
        for name in ("specular_loss", "reflections") + (("dark_loss",) if self.dark_loss is not None else ()):
            _range(name, getattr(self, name))
        if self.specular_loss[1] + self.reflections[1] > 1:
            raise ConfigError(f"sensor {self.name}: specular_loss + reflections can exceed the object")
        _range("reflection_depth", self.reflection_depth, hi=np.inf)
        if not 0 <= self.min_range < self.max_range:
            raise ConfigError(f"sensor {self.name}: need 0 <= min_range < max_range")

    @property
    def noise(self) -> DepthNoise:
        """The readings' RMS error model (what fusion's tolerances take)."""
        stereo = self.subpixel / (self.focal_px * self.baseline) if self.kind == "active-stereo" else 0.0
        return DepthNoise(self.noise_floor, self.noise_linear, stereo)

    def sigma(self, z: np.ndarray | float) -> np.ndarray | float:
        """RMS depth error at depth z (m): stereo ``z^2 * subpixel / (f * b)``; ToF ``floor + linear * z``."""
        return self.noise.sigma(z)


D435 = ("Intel RealSense D400 datasheet and 'Tuning depth cameras for best performance' (noise, min-Z, "
        "left invalid band)", "ClearGrasp, Sajjan et al., ICRA 2020 (glass read through)")
PRESETS = {
    "d435-like": SensorPreset("d435-like", sources=D435),
    "harsh-stereo": SensorPreset(
        "harsh-stereo", subpixel=0.12, edge_band=2, flying=0.4, specular_holes=0.35, specular_loss=(0.45, 0.65),
        reflections=(0.08, 0.16), reflection_depth=(0.03, 0.20), dark_loss=(0.4, 0.9), dark_ragged=0.6,
        transparent_behind=0.5, transparent_surface=0.2, blob_sigma=2.0,
        sources=D435 + ("Feldman et al., 'Depth completion with RGB prior', 2020 (reflective parts: reflections, "
                        "deflections)", "Carvalho et al., Sensors 22(19):7378, 2022 (D415 on transparent scenes)",
                        "issue 24's independent check (specular coverage ~40%, reflections 3-20 cm behind, "
                        "dark 40-90% lost)")),
    "tof-like": SensorPreset(
        "tof-like", kind="tof", subpixel=0.0, noise_floor=0.0015, noise_linear=0.001, systematic=0.003,
        min_range=0.25, max_range=3.86, edge_band=1, flying=0.9, multipath=2.0, multipath_max=0.02,
        specular_holes=0.6, specular_loss=(0.05, 0.2), reflections=(0.05, 0.12), reflection_depth=(0.01, 0.08),
        dark_loss=(0.2, 0.5), dark_ragged=0.8, dark_noise_gain=3.0, transparent_behind=0.6,
        transparent_surface=0.05, transparent_mixed=0.3,
        sources=("Azure Kinect DK hardware specification and depth-camera documentation (noise, systematic error, "
                 "invalidation of low-signal, multipath and mixed pixels; NFOV range 0.5-3.86 m)",
                 "Tolgyessy et al., Sensors 21(2):413, 2021 (precision, multipath, flying pixels, reflectivity)",
                 "PMD flying-pixel FAQ", "Song and Shim, 'Depth reconstruction of translucent objects from a single "
                 "ToF camera', ECCV 2018 (glass read mixed)")),
}
SENSORS = ("none", *PRESETS)


def preset(name: str) -> SensorPreset | None:
    """The preset called ``name``; None for 'none' (a perfect sensor)."""
    if name == "none":
        return None
    if name not in PRESETS:
        raise ConfigError(f"unknown sensor {name!r}; choose from {SENSORS}")
    return PRESETS[name]


def add_noise(z: np.ndarray, p: SensorPreset, rng: np.random.Generator, gain: np.ndarray | float = 1.0) -> np.ndarray:
    """z + N(0, (gain * sigma(z))^2) where z > 0."""
    return np.where(z > 0, z + rng.standard_normal(z.shape) * p.sigma(z) * gain, 0.0)


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


def _field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-blurred white noise, standardized (mean 0, std 1)."""
    f = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), max(sigma, 0.3))
    return (f - f.mean()) / (f.std() + 1e-12)


def _lowest(values: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the ``round(fraction * n)`` lowest entries of a 1-D array (ties: arbitrary but fixed)."""
    n = len(values)
    k = int(round(fraction * n))
    out = np.zeros(n, bool)
    if k > 0:
        out[np.argsort(values, kind="stable")[:k]] = True
    return out


def correlated_holes(region: np.ndarray, fraction: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A spatially correlated subset of ``region`` holding ``fraction`` of its pixels (up to ties)."""
    out = np.zeros(region.shape, bool)
    n = int(region.sum())
    if n == 0 or fraction <= 0:
        return out
    field_ = cv2.GaussianBlur(rng.standard_normal(region.shape).astype(np.float32), (0, 0), sigma)
    values = field_[region]
    k = int(round(fraction * n))
    if k >= n:
        return region.copy()
    if k == 0:
        return out
    threshold = np.partition(values, k - 1)[k - 1]
    out[region] = values <= threshold
    return out


def objects_of(region: np.ndarray, instance: np.ndarray | None) -> list[np.ndarray]:
    """The objects within ``region``: by instance id where given, else its 8-connected components."""
    if instance is not None:
        return [region & (instance == i) for i in np.unique(instance[region])]
    n, lab = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    return [lab == i for i in range(1, n)]


def silhouette_blobs(obj: np.ndarray, fraction: float, p: SensorPreset, rng: np.random.Generator,
                     exclude: np.ndarray | None = None) -> np.ndarray:
    """``fraction`` of the object's pixels in large blobs (``blob_scale`` of its diameter) drawn to its
    silhouette: the lowest values of ``smooth noise + silhouette_bias * (distance to the silhouette / max)``."""
    out = np.zeros(obj.shape, bool)
    cand = obj if exclude is None else obj & ~exclude
    n = int(obj.sum())
    if n == 0 or fraction <= 0 or not cand.any():
        return out
    sigma = p.blob_scale * np.sqrt(4 * n / np.pi)
    dist = cv2.distanceTransform(np.pad(obj, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    score = _field(obj.shape, sigma, rng) + p.silhouette_bias * dist / max(float(dist.max()), 1.0)
    out[cand] = _lowest(score[cand], min(1.0, fraction * n / cand.sum()))
    return out


def ragged_holes(obj: np.ndarray, fraction: float, p: SensorPreset, rng: np.random.Generator) -> np.ndarray:
    """``fraction`` of the object's pixels lost in a mix of blobs (``blob_sigma``) and pixel-scale raggedness."""
    out = np.zeros(obj.shape, bool)
    if not obj.any() or fraction <= 0:
        return out
    score = (1 - p.dark_ragged) * _field(obj.shape, p.blob_sigma, rng) + p.dark_ragged * _field(obj.shape, 0.7, rng)
    out[obj] = _lowest(score[obj], fraction)
    return out


MULTIPATH_SIGMA, MULTIPATH_RANGE = 8.0, 0.03  # px, m: the bilateral mean a pixel's concavity is taken against


def multipath_bias(z: np.ndarray, p: SensorPreset) -> np.ndarray:
    """ToF multipath: concave regions read too far by ``multipath * (z - local mean)`` (edge-preserving mean:
    a bilateral filter, so occlusion edges are not concave), capped at ``multipath_max``."""
    if p.multipath <= 0:
        return np.zeros_like(z)
    zf = np.where(z > 0, z, 0).astype(np.float32)
    mean = cv2.bilateralFilter(zf, -1, MULTIPATH_RANGE, MULTIPATH_SIGMA)
    return np.where(z > 0, np.clip(p.multipath * (zf - mean), 0, p.multipath_max), 0.0)


def _glass(seen: np.ndarray, z: np.ndarray, glass: np.ndarray, behind: np.ndarray, p: SensorPreset,
           rng: np.random.Generator) -> None:
    """Transparent pixels read behind / the glass / a mix / nothing, in correlated patches (in place)."""
    if p.transparent_surface == 0 and p.transparent_mixed == 0:  # the d435-like model: behind or nothing
        through = correlated_holes(glass, p.transparent_behind, p.blob_sigma, rng)
        seen[through] = behind[through]
        seen[glass & ~through] = 0.0
        return
    score = _field(glass.shape, p.blob_sigma, rng)[glass]
    order = np.argsort(score, kind="stable")
    n = len(order)
    cuts = np.round(np.cumsum([p.transparent_behind, p.transparent_surface, p.transparent_mixed]) * n).astype(int)
    kind = np.full(n, 3)
    for k, (a, b) in enumerate(zip([0, *cuts[:-1]], cuts)):
        kind[order[a:b]] = k
    t = rng.uniform(0.3, 0.9, n)
    zg, bg = z[glass], behind[glass]
    seen[glass] = np.select([kind == 0, kind == 1, kind == 2], [bg, zg, zg + t * (bg - zg)], 0.0)


def _edge_readings(out: np.ndarray, seen: np.ndarray, p: SensorPreset, rng: np.random.Generator) -> None:
    """Depth edges of ``seen``: a band of ``edge_band`` px invalid, ``flying`` of it reading a depth between the
    nearest and farthest surface of the neighbourhood (in place on ``out``)."""
    edge = depth_edges(seen, p.edge_jump)
    if p.edge_band > 1:
        edge = cv2.dilate(edge.view(np.uint8), np.ones((2 * p.edge_band - 1,) * 2, np.uint8)).astype(bool)
    edge &= seen > 0
    fly = edge & (rng.random(seen.shape) < p.flying)
    if fly.any():  # between the nearest and farthest surface of the neighbourhood
        pos = np.where(seen > 0, seen, np.nan).astype(np.float32)
        k = np.ones((2 * p.edge_band + 1,) * 2, np.uint8)
        lo = -cv2.dilate(np.nan_to_num(-pos, nan=-np.inf), k)
        hi = cv2.dilate(np.nan_to_num(pos, nan=-np.inf), k)
        t = rng.random(int(fly.sum()))
        out[fly] = lo[fly] + t * (hi[fly] - lo[fly])
    out[edge & ~fly] = 0.0


def _specular_blobs(out: np.ndarray, z: np.ndarray, spec: np.ndarray, instance: np.ndarray | None, p: SensorPreset,
                    rng: np.random.Generator) -> np.ndarray:
    """Per specular object: its lost blobs (returned) and its reflection blobs, each read at its own offset behind
    the surface (in place on ``out``)."""
    lost = np.zeros(z.shape, bool)
    if spec.any() and (p.specular_loss[1] > 0 or p.reflections[1] > 0):
        for obj in objects_of(spec & (z > 0), instance):
            lost |= silhouette_blobs(obj, rng.uniform(*p.specular_loss), p, rng)
            refl = silhouette_blobs(obj, rng.uniform(*p.reflections), p, rng, exclude=lost)
            if refl.any():  # each blob its own offset behind the surface
                n, lab = cv2.connectedComponents(refl.astype(np.uint8), connectivity=8)
                offset = rng.uniform(*p.reflection_depth, n)
                out[refl & (out > 0)] = (z + offset[lab])[refl & (out > 0)]
    return lost


def _material_holes(out: np.ndarray, mat: np.ndarray, highlight: np.ndarray | None, lost: np.ndarray,
                    instance: np.ndarray | None, p: SensorPreset, rng: np.random.Generator) -> None:
    """Readings lost to highlights, to the specular blobs ``lost`` and on dark surfaces (in place on ``out``)."""
    if highlight is not None:
        out[(mat == SPECULAR) & (highlight > p.specular_holes)] = 0.0
    out[lost] = 0.0
    dark = mat == DARK
    if p.dark_loss is None:
        out[correlated_holes(dark, p.dark_holes, p.blob_sigma, rng)] = 0.0
    elif dark.any():
        for obj in objects_of(dark, instance):
            out[ragged_holes(obj, rng.uniform(*p.dark_loss), p, rng)] = 0.0


def simulate(depth: np.ndarray, K: np.ndarray, p: SensorPreset | None, rng: np.random.Generator,
             material: np.ndarray | None = None, behind: np.ndarray | None = None,
             highlight: np.ndarray | None = None, instance: np.ndarray | None = None) -> np.ndarray:
    """The sensor's depth (float32 m, 0 = no reading) for ground-truth z-depth ``depth`` (0 = no surface).

    ``material``: per-pixel material code (MATERIALS order); ``behind``: z-depth of the scene without the
    transparent objects (what their pixels see through); ``highlight``: specular intensity in [0, 1];
    ``instance``: object ids (per-object rates; default: connected regions of each material).
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
        _glass(seen, z, glass, np.asarray(behind, np.float64), p, rng)
    if p.multipath > 0:
        seen = seen + multipath_bias(seen, p)
    out = seen.copy()
    if p.kind == "active-stereo":  # glass occludes nothing: the second imager sees through it too
        opaque = np.where(glass & (seen > 0), behind, seen) if glass.any() else seen
        out[stereo_shadow(opaque, K, p.baseline)] = 0.0
    _edge_readings(out, seen, p, rng)
    lost = _specular_blobs(out, z, mat == SPECULAR, instance, p, rng)
    if p.systematic > 0:
        out = np.where(out > 0, out + p.systematic * _field(z.shape, z.shape[1] / 4, rng), 0.0)
    gain = np.where(mat == DARK, p.dark_noise_gain, 1.0) if p.dark_noise_gain != 1 else 1.0
    out = quantize(add_noise(out, p, rng, gain), p.quantum)
    out[(out < p.min_range) | (out > p.max_range)] = 0.0
    _material_holes(out, mat, highlight, lost, instance, p, rng)
    return out.astype(np.float32)


def to_millimetres(z: np.ndarray) -> np.ndarray:
    """float metres (0 or NaN = none) -> 16UC1 millimetres (0 = none), saturating at 65535."""
    mm = np.round(np.nan_to_num(np.asarray(z, np.float64), nan=0.0) * 1000.0)
    return np.clip(mm, 0, 65535).astype(np.uint16)
