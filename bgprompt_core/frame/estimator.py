"""``ObjectDepthEstimator``: the one inference path used by the ROS node, bag evaluation and ``predict``.

Per frame: validate inputs -> one mask per object (binary, soft or instance labels; rembg when none)
-> for each object an aspect-preserving letterbox of the frame (or a re-centring virtual camera) to
the network's input, K tracked exactly -> all objects batched through the backend (Eq. 1 + frozen
network + Eq. 2) -> each depth upsampled to the input resolution, edge-aware and from the object's own samples only
(``upsample.joint_bilateral_upsample``), so every object pixel in the network's view gets a depth -> fused by
instance id, NaN elsewhere -> optional robust scale (or scale+shift) to an RGB-D sensor -> organized points.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from bgprompt_core.errors import ConfigError, InputError
from bgprompt_core.frame.batching import drop_vanished, missing_warning, network_batch
from bgprompt_core.frame.masks import MaskObject, split_mask
from bgprompt_core.frame.object_depth import network_guide, object_depth
from bgprompt_core.frame.result import ObjectDepthResult, grown
from bgprompt_core.frame.views import View, network_views
from bgprompt_core.geometry import check_intrinsics
from bgprompt_core.rgbd.fusion import SOURCE_PREDICTED, FusionConfig, FusionReport, fuse_frame
from bgprompt_core.settings import ALIGNS, BACKENDS, FUSIONS, PRECISIONS, SCALES, SEGMENTATIONS, UPSAMPLINGS

log = logging.getLogger("bgprompt.estimator")
__all__ = ["EstimatorConfig", "InputError", "ObjectDepthEstimator", "ObjectDepthResult"]


@dataclass(frozen=True)
class EstimatorConfig:
    """How ``ObjectDepthEstimator`` turns a frame into object depth (the ROS node's parameters map onto it).

    Args:
        model (str, default "mini"): the frozen depth network D: registry name, hub id or local directory.
        prompt (str, default "1bg"): the background B of Eq. 1: "1bg", "pnet" or "tabletop" (shipped with the
            model), "none" (white, the paper's baseline) or a checkpoint path. "default" is a deprecated "1bg".
        backend (str, default "torch"): "auto" (tensorrt > onnxruntime > torch), "torch", "onnxruntime",
            "tensorrt".
        onnx (str | None, default None): an exported graph for onnxruntime / tensorrt; with it neither torch nor
            transformers is imported. None: exported into ``cache_dir`` on first use.
        cache_dir (str, default "~/.cache/bgprompt"): exported graphs, TensorRT engines and timing caches.
        device (str, default "auto"): torch device (torch backend).
        precision (str, default "fp32"): "fp32" or "fp16" (network in fp16; phi and Eq. 2 stay fp32).
        scale (str, default "relative"): "relative" (depth up to scale, Eq. 2's range), "metric" (metric
            networks) or "align-to-sensor" (scale, or scale and shift, fitted to an RGB-D sensor's depth).
        align (str, default "scale-shift"): the align-to-sensor fit: "scale-shift" (disparity networks such as
            mini; what docs/grasp measures) or "scale".
        fusion (str, default "none"): align-to-sensor only: "none" (the aligned prediction) or "fill" (keep the
            sensor's consistent readings, fill holes and see-through / outlying ones with the prediction).
        fusion_config (FusionConfig): align-to-sensor: tolerances, the sensor's noise, plausibility and hole
            filling (``bgprompt_core.rgbd.fusion``; the node's ``fusion_*`` parameters).
        recenter (bool, default False): re-centre each object by a virtual camera before the network.
        recenter_fill (float, default 0.8): the share of the network input the re-centred object spans.
        mask_threshold (float, default 0.5): soft masks are objects where >= this value; a network pixel is the
            object's own depth sample where its (downsampled) mask is >= this value.
        upsample (str, default "joint-bilateral"): network depth -> frame pixels: "joint-bilateral" (edge-aware,
            guided by the colour image, from the object's own samples; every object pixel in view gets a depth) or
            "bilinear" (the upsampling before issue 29: no depth on the rim and on parts thinner than ~2 network
            pixels; for comparison).
        upsample_sigma_color (float, default 100.0): the joint bilateral colour kernel's std, on the mean absolute RGB
            difference (0-255); smaller follows colour edges harder (docs/RESOLUTION.md measures 25-100).
        min_object_pixels (int, default 16): smaller objects are left out.
        max_objects (int, default 16): the largest this many objects per frame are processed (one batch).
        max_depth (float, default inf): points farther than this (metres, or relative units) are dropped.
        segmentation (str, default "none"): "rembg" segments frames that come without a mask.
        rembg_model (str, default "u2net"): the rembg model (name under U2NET_HOME, or an .onnx path).
        local_only (bool, default True): never download model files.
    """

    model: str = "mini"
    prompt: str = "1bg"
    backend: str = "torch"
    onnx: str | None = None
    cache_dir: str = "~/.cache/bgprompt"
    device: str = "auto"
    precision: str = "fp32"
    scale: str = "relative"
    align: str = "scale-shift"
    fusion: str = "none"
    fusion_config: FusionConfig = field(default_factory=FusionConfig)
    recenter: bool = False
    recenter_fill: float = 0.8
    mask_threshold: float = 0.5
    upsample: str = "joint-bilateral"
    upsample_sigma_color: float = 100.0
    min_object_pixels: int = 16
    max_objects: int = 16
    max_depth: float = math.inf
    segmentation: str = "none"
    rembg_model: str = "u2net"
    local_only: bool = True

    def __post_init__(self) -> None:
        checks = [("backend", BACKENDS), ("scale", SCALES), ("align", ALIGNS), ("precision", PRECISIONS),
                  ("segmentation", SEGMENTATIONS), ("fusion", FUSIONS), ("upsample", UPSAMPLINGS)]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0 < self.mask_threshold < 1:
            raise ConfigError(f"mask_threshold must lie in (0, 1), got {self.mask_threshold}")
        if self.min_object_pixels < 1 or self.max_objects < 1:
            raise ConfigError("min_object_pixels and max_objects must be >= 1")
        if not (math.isfinite(self.upsample_sigma_color) and self.upsample_sigma_color > 0):
            raise ConfigError(f"upsample_sigma_color must be a positive number, got {self.upsample_sigma_color}")
        if not self.max_depth > 0:
            raise ConfigError(f"max_depth must be positive, got {self.max_depth}")
        if self.fusion != "none" and self.scale != "align-to-sensor":
            raise ConfigError(f"fusion {self.fusion!r} needs scale 'align-to-sensor' (a sensor depth image)")




@dataclass(frozen=True)
class _FrameInputs:
    """The last frame's network inputs, for ``composite_preview`` of that same frame (the same arrays)."""

    image: np.ndarray
    mask: np.ndarray | None
    K: np.ndarray
    x: np.ndarray
    m: np.ndarray


class ObjectDepthEstimator:
    """Build once (loads the model / engine), then call ``estimate`` per frame."""

    def __init__(self, cfg: EstimatorConfig, backend=None, spec=None, model=None,
                 fusion: FusionConfig | None = None):
        self.cfg = cfg
        self.fusion_cfg = fusion or cfg.fusion_config
        if backend is None:
            from bgprompt_core.runtime.build import build_runtime

            backend, spec, model = build_runtime(cfg)
        self.backend, self.spec, self.model = backend, spec, model  # model: the torch PromptedDepth, or None
        self.size = tuple(spec.input_size)
        self.segmenter = None
        self._last: _FrameInputs | None = None
        if cfg.segmentation == "rembg":
            from bgprompt_core.frame.segmentation import RembgSegmenter

            self.segmenter = RembgSegmenter(cfg.rembg_model)
        if cfg.scale == "metric" and spec.output_kind != "metric_depth":
            raise ConfigError(f"scale 'metric' needs a metric network; {spec.name} predicts {spec.output_kind}. "
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
        """One frame's per-object depth: the steps of the module's docstring."""
        t0 = time.perf_counter()
        K = np.asarray(K, np.float64)
        self._check(image, K, mask, sensor_depth)
        warnings: list[str] = []
        seen = self._objects(image, mask, warnings)
        x, m, views = self.network_inputs(image, K, seen)
        if self.model is not None:  # composite_preview of this frame reuses them
            self._last = _FrameInputs(image, mask, K, x, m)
        objects, x, m, views = drop_vanished(seen, x, m, views, self.cfg.mask_threshold, self.cfg.recenter, warnings)
        t1 = time.perf_counter()
        depth_s = self.backend.run(x, m)
        t2 = time.perf_counter()
        # an object left out before the network (its mask vanished there) is named like one the network missed
        kept = {o.id for o in objects}
        no_depth: dict[int, dict[str, int]] = {o.id: {"unseen": o.pixels} for o in seen if o.id not in kept}
        depth, valid, instance = self._frame_depth(image, objects, x, m, depth_s, views, no_depth, warnings)
        reports: dict[int, FusionReport | None] = {}  # align-to-sensor: how each object was fitted to the sensor
        source = None
        if self.cfg.scale == "align-to-sensor":
            depth, valid, instance, source, reports = self._fuse(depth, valid, objects, sensor_depth, K, no_depth,
                                                                 warnings)
        if source is None:  # every depth is the network's: 2 (predicted), as the cloud's source field documents
            # bool viewed as uint8 is 0 (SOURCE_NONE) / 1: one uint8 pass, not np.where's int64 frame (0.17 ms)
            source = valid.view(np.uint8) * np.uint8(SOURCE_PREDICTED)
        t3 = time.perf_counter()
        timing = {"preprocess": 1e3 * (t1 - t0), "network": 1e3 * (t2 - t1), "postprocess": 1e3 * (t3 - t2),
                  "total": 1e3 * (t3 - t0)}
        units = "metres" if self.cfg.scale in ("metric", "align-to-sensor") else "relative"
        h, w = image.shape[:2]
        fusing = self.cfg.scale == "align-to-sensor"  # fused depth may fill the object's box grown by the ring
        boxes = [grown(o.box, self.fusion_cfg.ring, h, w) if fusing else o.box for o in objects]
        result = ObjectDepthResult(depth, valid, instance, [o.id for o in objects], K, units, reports, source, timing,
                                   warnings, no_depth, boxes)
        return result.limit_depth(self.cfg.max_depth)

    def _objects(self, image: np.ndarray, mask: np.ndarray | None, warnings: list[str]) -> list[MaskObject]:
        """The frame's objects (segmented by rembg when no mask comes), the largest ``max_objects``."""
        if mask is None:
            if self.segmenter is None:
                raise InputError("no mask given and segmentation is off (set segmentation to 'rembg' or send masks)")
            mask = self.segmenter(image)
        dropped: list[int] = []
        objects = split_mask(mask, self.cfg.mask_threshold, self.cfg.min_object_pixels, self.cfg.max_objects, dropped)
        if dropped:
            warnings.append(f"{len(objects) + len(dropped)} objects: only the {self.cfg.max_objects} largest are "
                            f"processed (labels {[o.id for o in objects]}); left out {len(dropped)}: "
                            f"{dropped[:10]}{' ...' if len(dropped) > 10 else ''}")
        return objects

    def _frame_depth(self, image: np.ndarray, objects: list[MaskObject], x: np.ndarray, m: np.ndarray,
                     depth_s: np.ndarray, views: list[View], no_depth: dict[int, dict[str, int]],
                     warnings: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every object's network depth on the frame (NaN / 0 beyond the objects' boxes): (depth, valid, instance)."""
        h, w = image.shape[:2]
        depth = np.full((h, w), np.nan, np.float32)
        instance = np.zeros((h, w), np.int32)
        valid = np.zeros((h, w), bool)
        guide = None  # the network input's colour (uint8 RGBA): one for all objects that share a view
        for k, obj in enumerate(objects):
            if k == 0 or views[k] is not views[k - 1]:
                guide = network_guide(x[k])
            d, ok, missing = object_depth(depth_s[k], m[k, 0], guide, views[k], image, obj, self.cfg.mask_threshold,
                                          self.cfg.upsample, self.cfg.upsample_sigma_color)
            if missing:
                no_depth[obj.id] = missing
                warnings.append(missing_warning(obj, missing))
            depth[obj.box][ok] = d[ok]
            instance[obj.box][ok] = obj.id
            valid[obj.box] |= ok
        return depth, valid, instance

    def _fuse(self, depth: np.ndarray, valid: np.ndarray, objects: list[MaskObject], sensor: np.ndarray,
              K: np.ndarray, no_depth: dict[int, dict[str, int]], warnings: list[str]):
        """align-to-sensor: (depth, valid, instance, source, fusion reports) of the prediction fitted to (and with
        ``fusion: fill`` fused with) the sensor (``rgbd.fusion.fuse_frame``)."""
        labels = np.zeros(depth.shape, np.int32)  # the support plane is sought around each object, away from all
        for obj in objects:
            labels[obj.box][obj.box_binary] = obj.id
        predicted = valid
        depth, source, reports, notes = fuse_frame(depth, labels, [o.id for o in objects], sensor, K, self.fusion_cfg,
                                                   self.cfg.align, keep_readings=self.cfg.fusion == "fill")
        warnings += notes
        valid = np.isfinite(depth)
        instance = np.where(valid, labels, 0)
        for obj in objects:  # a prediction that fusion could not place (no readings, no support plane)
            lost = int(np.count_nonzero(predicted[obj.box] & (labels[obj.box] == obj.id) & ~valid[obj.box]))
            if lost and not valid[obj.box][labels[obj.box] == obj.id].any():
                no_depth.setdefault(obj.id, {})["fusion"] = lost
        return depth, valid, instance, source, reports

    def network_inputs(self, image: np.ndarray, K: np.ndarray, objects: list[MaskObject]
                       ) -> tuple[np.ndarray, np.ndarray, list[View]]:
        """Per object, the network's input image (N, 3, S, S) in [0, 1], soft mask (N, 1, S, S) and the view
        that maps it back: a letterbox of the whole frame, or a re-centring virtual camera (``recenter``)."""
        views = network_views(objects, K, image.shape[:2], self.size, self.cfg.recenter, self.cfg.recenter_fill)
        x, m = network_batch(image, objects, views, self.size)
        return x, m, views

    def composite_preview(self, image: np.ndarray, mask: np.ndarray, K: np.ndarray | None = None) -> np.ndarray:
        """What the network sees (Eq. 1 composites at the network input), one tile per object side by side.

        RGB uint8 of shape (S, n * S, 3) for n objects (at most ``max_objects``, largest first): exactly the
        inputs ``estimate`` builds (``network_inputs``, re-centred when ``recenter`` is on; K is then needed)
        through ``composite`` itself, shown with an identity phi (in [0, 1] instead of the network's range).
        Right after ``estimate`` of the same (unchanged) arrays, its inputs, and the background the torch
        backend computed from them (PNet), are reused instead of computed again.
        """
        import torch

        from bgprompt_core.method.composite import composite
        from bgprompt_core.networks.normalization import Normalization

        if self.model is None:
            raise InputError("composite previews need the torch model (backend torch, or no exported graph given): "
                             "this runtime runs an exported graph only")
        if self.cfg.recenter and K is None:
            raise InputError("the composite of a re-centred object needs the camera intrinsics K")
        x, m = self._preview_inputs(image, mask, K)
        with torch.no_grad():
            xt, mt = torch.from_numpy(x), torch.from_numpy(m)
            bg = self._backend_background(x, m)
            if bg is None:
                dev = next(self.model.net.parameters()).device
                bg = self.model.background(xt.to(dev), mt.to(dev))
            comp = composite(xt, mt, bg.cpu(), Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), self.model.composite)
        tiles = (comp.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        return np.concatenate(list(tiles), axis=1)

    def _preview_inputs(self, image: np.ndarray, mask: np.ndarray, K: np.ndarray | None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The network inputs of every object of ``mask``: the last ``estimate``'s when it had these very arrays."""
        K = np.eye(3) if K is None else np.asarray(K, np.float64)
        last = self._last
        if (last is not None and mask is not None and last.image is image and last.mask is mask
                and (not self.cfg.recenter or np.array_equal(last.K, K))):
            return last.x, last.m
        objects = split_mask(mask, self.cfg.mask_threshold, self.cfg.min_object_pixels, self.cfg.max_objects)
        x, m, _ = self.network_inputs(image, K, objects)
        return x, m

    def _backend_background(self, x: np.ndarray, m: np.ndarray):
        """The background (torch, on the backend's device) the torch backend computed for exactly (x, m), or None."""
        ran = getattr(self.backend, "last_background", None)
        if ran is None or ran[0] is not x or ran[1] is not m:
            return None
        return ran[2]
