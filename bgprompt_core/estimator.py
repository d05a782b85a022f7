"""``ObjectDepthEstimator``: the one inference path used by the ROS node, bag evaluation and ``predict``.

Per frame: validate inputs -> one mask per object (binary, soft or instance labels; rembg when none)
-> for each object an aspect-preserving letterbox of the frame (or a re-centring virtual camera) to
the network's input, K tracked exactly -> all objects batched through the backend (Eq. 1 + frozen
network + Eq. 2) -> each depth warped back to the input resolution -> fused by instance id, NaN
elsewhere -> optional robust scale (or scale+shift) to an RGB-D sensor -> organized points.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from .alignment import Alignment, fit_to_sensor
from .geometry import Letterbox, check_intrinsics
from .recenter import VirtualCamera, recenter_camera

log = logging.getLogger("bgprompt.estimator")
SCALES = ("relative", "metric", "align-to-sensor")


class InputError(ValueError):
    """A frame that cannot be processed (wrong encoding, sizes, empty mask, bad intrinsics...)."""


@dataclass(frozen=True)
class EstimatorConfig:
    model: str = "mini"
    prompt: str = "default"  # "default": the shipped prompt of the model; "none": white background; or a path
    backend: str = "torch"  # torch | onnxruntime | tensorrt
    onnx: str | None = None  # exported graph for onnxruntime / tensorrt (default: exported into cache_dir)
    cache_dir: str = "~/.cache/bgprompt"
    device: str = "auto"
    precision: str = "fp32"
    scale: str = "relative"
    align: str = "scale"  # scale | scale-shift (align-to-sensor)
    recenter: bool = False
    recenter_fill: float = 0.8
    mask_threshold: float = 0.5
    min_object_pixels: int = 16
    max_objects: int = 16
    max_depth: float = math.inf
    segmentation: str = "none"  # none | rembg
    rembg_model: str = "u2net"
    local_only: bool = True

    def __post_init__(self) -> None:
        checks = [("backend", ("torch", "onnxruntime", "tensorrt")), ("scale", SCALES),
                  ("align", ("scale", "scale-shift")), ("precision", ("fp32", "fp16")),
                  ("segmentation", ("none", "rembg"))]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0 < self.mask_threshold < 1:
            raise ValueError(f"mask_threshold must lie in (0, 1), got {self.mask_threshold}")
        if self.min_object_pixels < 1 or self.max_objects < 1:
            raise ValueError("min_object_pixels and max_objects must be >= 1")
        if not self.max_depth > 0:
            raise ValueError(f"max_depth must be positive, got {self.max_depth}")


@dataclass
class ObjectDepthResult:
    depth: np.ndarray  # (H, W) float32, NaN outside objects / invalid
    valid: np.ndarray  # (H, W) bool
    instance: np.ndarray  # (H, W) int32 object id, 0 = none
    object_ids: list[int]
    points: np.ndarray  # (H, W, 3) float32 camera optical frame, NaN where invalid
    K: np.ndarray  # intrinsics of depth / points (the input's)
    units: str  # "relative" (up to scale) or "metres"
    alignment: dict[int, Alignment | None] = field(default_factory=dict)
    timing_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def split_mask(mask: np.ndarray, threshold: float, min_pixels: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(object id, soft mask for compositing, binary mask) per object.

    bool / uint8 (0/1 or 0/255): one object; float in [0, 1]: one soft object; uint16 / int32 / int64:
    instance labels (every non-zero value is an object).
    """
    if mask.dtype == bool or mask.dtype == np.uint8:
        binary = mask > 0
        objs = [(1, binary.astype(np.float32), binary)]
    elif np.issubdtype(mask.dtype, np.floating):
        if not np.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise InputError("a float mask must be a soft mask with values in [0, 1] (NaN/inf or out of range found)")
        objs = [(1, mask.astype(np.float32), mask >= threshold)]
    elif np.issubdtype(mask.dtype, np.integer):
        if mask.min() < 0:
            raise InputError("instance labels must be >= 0 (0 = background)")
        if mask.max() <= 65535:  # bincount is much faster than np.unique on a full frame
            counts = np.bincount(mask.reshape(-1).astype(np.int64))
            ids = [int(i) for i in np.nonzero(counts)[0] if i != 0 and counts[i] >= min_pixels]
        else:
            values, n = np.unique(mask, return_counts=True)
            ids = [int(v) for v, c in zip(values, n) if v != 0 and c >= min_pixels]
        objs = []
        for i in ids:
            b = mask == i
            objs.append((i, b.astype(np.float32), b))
    else:
        raise InputError(f"unsupported mask dtype {mask.dtype}")
    kept = [o for o in objs if int(o[2].sum()) >= min_pixels]
    if not kept:
        raise InputError(f"empty mask: no object with at least {min_pixels} pixels")
    return kept


class ObjectDepthEstimator:
    """Build once (loads the model / engine), then call ``estimate`` per frame."""

    def __init__(self, cfg: EstimatorConfig, backend=None, spec=None, model=None):
        self.cfg = cfg
        if backend is None:
            from .runtime import build_runtime

            backend, spec, model = build_runtime(cfg)
        self.backend, self.spec, self.model = backend, spec, model
        self.size = tuple(spec.input_size)
        self.segmenter = None
        if cfg.segmentation == "rembg":
            from .segmentation import RembgSegmenter

            self.segmenter = RembgSegmenter(cfg.rembg_model)
        if cfg.scale == "metric" and spec.output_kind != "metric_depth":
            raise ValueError(f"scale 'metric' needs a metric network; {spec.name} predicts {spec.output_kind}. "
                             f"Use 'relative' or 'align-to-sensor'.")

    # --- input checks -------------------------------------------------------------------------
    def _check(self, image: np.ndarray, K: np.ndarray, mask, sensor) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        h, w = image.shape[:2]
        if h < 8 or w < 8:
            raise InputError(f"image of {w}x{h} is too small (needs at least 8x8)")
        try:
            check_intrinsics(K)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        if mask is not None and mask.shape[:2] != (h, w):
            raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {w}x{h}")
        if self.cfg.scale == "align-to-sensor" and sensor is None:
            raise InputError("scale 'align-to-sensor' needs a sensor depth image")
        if sensor is not None and sensor.shape[:2] != (h, w):
            raise InputError(f"sensor depth is {sensor.shape[1]}x{sensor.shape[0]}, image is {w}x{h}")

    # --- main -----------------------------------------------------------------------------------
    def estimate(self, image: np.ndarray, K: np.ndarray, mask: np.ndarray | None = None,
                 sensor_depth: np.ndarray | None = None) -> ObjectDepthResult:
        t0 = time.perf_counter()
        K = np.asarray(K, np.float64)
        self._check(image, K, mask, sensor_depth)
        warnings: list[str] = []
        if mask is None:
            if self.segmenter is None:
                raise InputError("no mask given and segmentation is off (set segmentation to 'rembg' or send masks)")
            mask = self.segmenter(image)
        objects = split_mask(mask, self.cfg.mask_threshold, self.cfg.min_object_pixels)
        if len(objects) > self.cfg.max_objects:
            warnings.append(f"{len(objects)} objects, only the {self.cfg.max_objects} largest are processed")
            objects = sorted(objects, key=lambda o: -int(o[2].sum()))[: self.cfg.max_objects]
        h, w = image.shape[:2]
        S = self.size
        views: list[Letterbox | VirtualCamera] = []
        x = np.empty((len(objects), 3, S[0], S[1]), np.float32)
        m = np.empty((len(objects), 1, S[0], S[1]), np.float32)
        lb = Letterbox(h, w, S[0], S[1])
        # resize the uint8 frame, then convert: never a full-resolution float copy
        lb_image = self._letterbox(image, lb, 255, cv2.INTER_AREA).astype(np.float32) / 255.0 \
            if not self.cfg.recenter else None
        for k, (_, soft, _) in enumerate(objects):
            if self.cfg.recenter:
                cam = recenter_camera(soft >= self.cfg.mask_threshold, K, S, self.cfg.recenter_fill)
                x[k] = cam.warp_image(image, border=(255, 255, 255)).transpose(2, 0, 1).astype(np.float32) / 255.0
                m[k, 0] = cam.warp_image(soft)
                views.append(cam)
            else:
                x[k] = lb_image.transpose(2, 0, 1)
                m[k, 0] = self._letterbox(soft, lb, 0.0, cv2.INTER_LINEAR)
                views.append(lb)
        t1 = time.perf_counter()
        depth_s = self.backend.run(x, m)
        t2 = time.perf_counter()
        depth = np.full((h, w), np.nan, np.float32)
        instance = np.zeros((h, w), np.int32)
        alignment: dict[int, Alignment | None] = {}
        for k, (oid, _, binary) in enumerate(objects):
            d, ok = self._back(depth_s[k], m[k, 0] >= self.cfg.mask_threshold, views[k], (h, w))
            ok &= binary & np.isfinite(d) & (d > 0)
            if self.cfg.scale == "align-to-sensor":
                fit = fit_to_sensor(d, sensor_depth, ok, self.cfg.align)
                alignment[oid] = fit
                if fit is None:
                    warnings.append(f"object {oid}: too few valid sensor pixels to align; left out")
                    continue
                d = fit.scale * d + fit.shift
                ok &= d > 0
            depth[ok] = d[ok]
            instance[ok] = oid
        valid = np.isfinite(depth) & (depth <= self.cfg.max_depth)
        depth[~valid] = np.nan
        instance[~valid] = 0
        points = backproject_np(depth, K)
        t3 = time.perf_counter()
        units = "metres" if self.cfg.scale in ("metric", "align-to-sensor") else "relative"
        timing = {"preprocess": 1e3 * (t1 - t0), "network": 1e3 * (t2 - t1), "postprocess": 1e3 * (t3 - t2),
                  "total": 1e3 * (t3 - t0)}
        return ObjectDepthResult(depth, valid, instance, [o[0] for o in objects], points, K, units, alignment,
                                 timing, warnings)

    def composite_preview(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """What the network sees for the first object (Eq. 1 composite at the network input), RGB uint8."""
        import torch

        objects = split_mask(mask, self.cfg.mask_threshold, self.cfg.min_object_pixels)
        soft = objects[0][1]
        h, w = image.shape[:2]
        lb = Letterbox(h, w, *self.size)
        x = self._letterbox(image.astype(np.float32) / 255.0, lb, 1.0, cv2.INTER_AREA).transpose(2, 0, 1)[None]
        m = self._letterbox(soft, lb, 0.0, cv2.INTER_LINEAR)[None, None]
        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(x))
            mt = torch.from_numpy(np.ascontiguousarray(m))
            dev = next(self.model.net.parameters()).device
            bg = self.model.background(xt.to(dev), mt.to(dev)).cpu()
            comp = mt * xt + (1 - mt) * bg
        return (comp[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)

    @staticmethod
    def _letterbox(img: np.ndarray, lb: Letterbox, fill: float, interp: int) -> np.ndarray:
        rh, rw = lb.resized
        top, left = lb.offset
        shape = (lb.out_h, lb.out_w) + img.shape[2:]
        out = np.full(shape, fill, img.dtype if img.dtype == np.uint8 else np.float32)
        out[top:top + rh, left:left + rw] = cv2.resize(img, (rw, rh), interpolation=interp)
        return out

    @staticmethod
    def _back(depth_s: np.ndarray, valid_s: np.ndarray, view, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Network-resolution depth -> input resolution (z unchanged by a letterbox; rescaled by a rotation)."""
        h, w = size
        if isinstance(view, VirtualCamera):
            return view.unwarp_depth(depth_s, valid_s)
        rh, rw = view.resized
        top, left = view.offset
        dv = np.stack([np.where(valid_s, depth_s, 0), valid_s], -1).astype(np.float32)[top:top + rh, left:left + rw]
        dv = cv2.resize(dv, (w, h), interpolation=cv2.INTER_LINEAR)  # depth and validity in one pass
        ok = dv[..., 1] > 0.999  # no mixing with pixels outside the object
        return np.where(ok, dv[..., 0], np.nan).astype(np.float32), ok


_RAYS: dict = {}


def _rays(K: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float32 rays with z = 1 for K, cached: cameras rarely change between frames."""
    key = (K.tobytes(), h, w)
    if key not in _RAYS:
        if len(_RAYS) > 8:
            _RAYS.clear()
        u = (np.arange(w, dtype=np.float64) - K[0, 2]) / K[0, 0]
        v = (np.arange(h, dtype=np.float64) - K[1, 2]) / K[1, 1]
        rays = np.empty((h, w, 3), np.float32)
        rays[..., 1] = v[:, None]
        rays[..., 0] = u[None, :] - (K[0, 1] / K[0, 0]) * v[:, None]
        rays[..., 2] = 1.0
        _RAYS[key] = rays
    return _RAYS[key]


def backproject_np(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Organized points (H, W, 3) float32 in the camera optical frame; NaN where depth is NaN."""
    h, w = depth.shape
    return np.multiply(_rays(np.asarray(K, np.float64), h, w), depth[..., None], dtype=np.float32)
