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

import cv2
import numpy as np

from bgprompt_core.method.config import ConfigError
from bgprompt_core.rgbd.fusion import FUSIONS, SOURCE_PREDICTED, FusionConfig, FusionReport, fuse_frame
from bgprompt_core.geometry import Letterbox, backproject_np, check_intrinsics, resize_roi
from bgprompt_core.frame.masks import InputError, MaskObject, split_mask  # noqa: F401  (InputError: the estimator's error too)
from bgprompt_core.frame.recenter import VirtualCamera, recenter_camera
from bgprompt_core.frame.upsample import METHODS as UPSAMPLE_METHODS
from bgprompt_core.frame.upsample import joint_bilateral_upsample, letterbox_coords, pack_samples

log = logging.getLogger("bgprompt.estimator")
SCALES = ("relative", "metric", "align-to-sensor")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")  # auto: see runtime.resolve_backend


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
        checks = [("backend", BACKENDS), ("scale", SCALES),
                  ("align", ("scale", "scale-shift")), ("precision", ("fp32", "fp16")),
                  ("segmentation", ("none", "rembg")), ("fusion", FUSIONS), ("upsample", UPSAMPLE_METHODS)]
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


@dataclass
class ObjectDepthResult:
    depth: np.ndarray  # (H, W) float32, NaN outside objects / invalid
    valid: np.ndarray  # (H, W) bool
    instance: np.ndarray  # (H, W) int32 object id, 0 = none
    object_ids: list[int]
    K: np.ndarray  # intrinsics of depth / points (the input's)
    units: str  # "relative" (up to scale) or "metres"
    fusion: dict[int, FusionReport | None] = field(default_factory=dict)  # align-to-sensor: per object
    source: np.ndarray | None = None  # (H, W) uint8: SOURCE_SENSOR / _PREDICTED / _INTERPOLATED, 0 = none
    timing_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # object id -> {reason: pixels} for object pixels left without depth: "off_view" (outside the network's view),
    # "unseen" (the object vanished at the network's resolution), "fusion" (no scale to the sensor)
    no_depth: dict[int, dict[str, int]] = field(default_factory=dict)
    boxes: list[tuple[slice, slice]] = field(default_factory=list)  # where depth may be: the objects' boxes
    _points: np.ndarray | None = field(default=None, repr=False)

    def limit_depth(self, max_depth: float) -> "ObjectDepthResult":
        """Drop every point farther than ``max_depth`` (in place; returns self)."""
        if math.isinf(max_depth):
            return self
        far = self.depth > max_depth  # NaN > x is False
        if far.any():
            self.depth[far] = np.nan
            self.valid[far] = False
            self.instance[far] = 0
            if self.source is not None:
                self.source[far] = 0
            self._points = None
        return self

    @property
    def points(self) -> np.ndarray:
        """Organized (H, W, 3) float32 camera optical frame points, NaN where invalid.

        Computed on first use (a full-resolution pass): callers that only need depth do not pay for it.
        """
        if self._points is None:
            if not self.boxes:
                self._points = backproject_np(self.depth, self.K)
            else:  # NaN everywhere, rays x depth on the objects' boxes only
                self._points = np.full((*self.depth.shape, 3), np.nan, np.float32)
                for box in self.boxes:
                    self._points[box] = backproject_np(self.depth[box], self.K, origin=(box[0].start, box[1].start))
        return self._points


def _grown(box: tuple[slice, slice], margin: int, h: int, w: int) -> tuple[slice, slice]:
    rows, cols = box
    return (slice(max(rows.start - margin, 0), min(rows.stop + margin, h)),
            slice(max(cols.start - margin, 0), min(cols.stop + margin, w)))


class ObjectDepthEstimator:
    """Build once (loads the model / engine), then call ``estimate`` per frame."""

    def __init__(self, cfg: EstimatorConfig, backend=None, spec=None, model=None,
                 fusion: FusionConfig | None = None):
        self.cfg = cfg
        self.fusion_cfg = fusion or cfg.fusion_config
        if backend is None:
            from bgprompt_core.runtime.build import build_runtime

            backend, spec, model = build_runtime(cfg)
        self.backend, self.spec, self.model = backend, spec, model
        self.size = tuple(spec.input_size)
        self.segmenter = None
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
        t0 = time.perf_counter()
        K = np.asarray(K, np.float64)
        self._check(image, K, mask, sensor_depth)
        warnings: list[str] = []
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
        h, w = image.shape[:2]
        x, m, views = self.network_inputs(image, K, objects)
        seen = objects
        objects, x, m, views = self._drop_vanished(objects, x, m, views, warnings)
        t1 = time.perf_counter()
        depth_s = self.backend.run(x, m)
        t2 = time.perf_counter()
        # everything below works on each object's bounding box only: the rest of the frame stays NaN / 0
        depth = np.full((h, w), np.nan, np.float32)
        instance = np.zeros((h, w), np.int32)
        valid = np.zeros((h, w), bool)
        fusion: dict[int, FusionReport | None] = {}
        source = None
        # an object left out before the network (its mask vanished there) is named like one the network missed
        kept = {o.id for o in objects}
        no_depth: dict[int, dict[str, int]] = {o.id: {"unseen": o.pixels} for o in seen if o.id not in kept}
        guide = None  # the network input's colour (uint8 RGB): one for all objects of a letterbox
        for k, obj in enumerate(objects):
            if guide is None or self.cfg.recenter:
                guide = cv2.cvtColor((x[k].transpose(1, 2, 0) * np.float32(255) + np.float32(0.5)).astype(np.uint8),
                                     cv2.COLOR_RGB2RGBA)
            d, ok, missing = self._object_depth(depth_s[k], m[k, 0], guide, views[k], image, obj, obj.box)
            if missing:
                no_depth[obj.id] = missing
                warnings.append(self._missing_warning(obj, missing))
            depth[obj.box][ok] = d[ok]
            instance[obj.box][ok] = obj.id
            valid[obj.box] |= ok
        if self.cfg.scale == "align-to-sensor":  # the support plane is sought around each object, away from all
            labels = np.zeros((h, w), np.int32)
            for obj in objects:
                labels[obj.box][obj.binary[obj.box]] = obj.id
            predicted = valid
            depth, source, fusion, notes = fuse_frame(depth, labels, [o.id for o in objects], sensor_depth, K,
                                                      self.fusion_cfg, self.cfg.align, fill=self.cfg.fusion == "fill")
            warnings += notes
            valid = np.isfinite(depth)
            instance = np.where(valid, labels, 0)
            for obj in objects:  # a prediction that fusion could not place (no readings, no support plane)
                lost = int(np.count_nonzero(predicted[obj.box] & (labels[obj.box] == obj.id) & ~valid[obj.box]))
                if lost and not valid[obj.box][labels[obj.box] == obj.id].any():
                    no_depth.setdefault(obj.id, {})["fusion"] = lost
        if source is None:  # every depth is the network's: 2 (predicted), as the cloud's source field documents
            # bool viewed as uint8 is 0 (SOURCE_NONE) / 1: one uint8 pass, not np.where's int64 frame (0.17 ms)
            source = valid.view(np.uint8) * np.uint8(SOURCE_PREDICTED)
        t3 = time.perf_counter()
        units = "metres" if self.cfg.scale in ("metric", "align-to-sensor") else "relative"
        timing = {"preprocess": 1e3 * (t1 - t0), "network": 1e3 * (t2 - t1), "postprocess": 1e3 * (t3 - t2),
                  "total": 1e3 * (t3 - t0)}
        fusing = self.cfg.scale == "align-to-sensor"  # fused depth may fill the object's box grown by the ring
        boxes = [_grown(o.box, self.fusion_cfg.ring, h, w) if fusing else o.box for o in objects]
        result = ObjectDepthResult(depth, valid, instance, [o.id for o in objects], K, units, fusion, source, timing,
                                   warnings, no_depth, boxes)
        return result.limit_depth(self.cfg.max_depth)

    def network_inputs(self, image: np.ndarray, K: np.ndarray, objects: list[MaskObject]
                       ) -> tuple[np.ndarray, np.ndarray, list]:
        """Per object, the network's input image (N, 3, S, S) in [0, 1], soft mask (N, 1, S, S) and the view
        that maps it back: a letterbox of the whole frame, or a re-centring virtual camera (``recenter``)."""
        h, w = image.shape[:2]
        S = self.size
        views: list[Letterbox | VirtualCamera] = []
        x = np.empty((len(objects), 3, S[0], S[1]), np.float32)
        m = np.empty((len(objects), 1, S[0], S[1]), np.float32)
        lb = Letterbox(h, w, S[0], S[1])
        # resize the uint8 frame, then convert: never a full-resolution float copy
        lb_image = self._letterbox(image, lb, 255, cv2.INTER_AREA).astype(np.float32) / 255.0 \
            if not self.cfg.recenter else None
        for k, obj in enumerate(objects):
            if self.cfg.recenter:
                cam = recenter_camera(obj.binary, K, S, self.cfg.recenter_fill)
                x[k] = cam.warp_image(image, border=(255, 255, 255)).transpose(2, 0, 1).astype(np.float32) / 255.0
                m[k, 0] = cam.warp_image(obj.soft_float())
                views.append(cam)
            else:
                x[k] = lb_image.transpose(2, 0, 1)
                m[k, 0] = self._letterbox_mask(obj, lb)
                views.append(lb)
        return x, m, views

    def _drop_vanished(self, objects: list[MaskObject], x: np.ndarray, m: np.ndarray, views: list,
                       warnings: list[str]) -> tuple[list[MaskObject], np.ndarray, np.ndarray, list]:
        """Leave out, with a warning, objects whose mask vanishes at network resolution (a 1x16 px object in a
        letterbox): Eq. 2 over the object has no pixels to take its range from (torch raised, an exported graph
        gave NaN), and no pixel of theirs would map back. Every backend gets the same batch."""
        keep = [k for k in range(len(objects))
                if (m[k, 0] > 0.5).any() and (m[k, 0] >= self.cfg.mask_threshold).any()]
        if len(keep) == len(objects):
            return objects, x, m, views
        gone = [objects[k].id for k in range(len(objects)) if k not in keep]
        hint = "" if self.cfg.recenter else "; recenter: true enlarges each object to the network input"
        if not keep:
            raise InputError(f"every object vanishes at the network's {self.size[0]}x{self.size[1]} input (ids "
                             f"{gone}): no mask pixel is left{hint}")
        warnings.append(f"object(s) {gone} left out: their masks vanish at the network's {self.size[0]}x"
                        f"{self.size[1]} input{hint}")
        warnings += [self._missing_warning(objects[k], {"unseen": objects[k].pixels})
                     for k in range(len(objects)) if k not in keep]
        return [objects[k] for k in keep], x[keep], m[keep], [views[k] for k in keep]

    def composite_preview(self, image: np.ndarray, mask: np.ndarray, K: np.ndarray | None = None) -> np.ndarray:
        """What the network sees (Eq. 1 composites at the network input), one tile per object side by side.

        RGB uint8 of shape (S, n * S, 3) for n objects (at most ``max_objects``, largest first): exactly the
        inputs ``estimate`` builds (``network_inputs``, re-centred when ``recenter`` is on; K is then needed)
        through ``composite`` itself, shown with an identity phi (in [0, 1] instead of the network's range).
        """
        import torch

        from bgprompt_core.method.composite import composite
        from bgprompt_core.networks.normalization import Normalization

        if self.model is None:
            raise InputError("composite previews need the torch model (backend torch, or no exported graph given): "
                             "this runtime runs an exported graph only")
        if self.cfg.recenter and K is None:
            raise InputError("the composite of a re-centred object needs the camera intrinsics K")
        objects = split_mask(mask, self.cfg.mask_threshold, self.cfg.min_object_pixels, self.cfg.max_objects)
        K = np.eye(3) if K is None else np.asarray(K, np.float64)
        x, m, _ = self.network_inputs(image, K, objects)
        with torch.no_grad():
            xt, mt = torch.from_numpy(x), torch.from_numpy(m)
            dev = next(self.model.net.parameters()).device
            bg = self.model.background(xt.to(dev), mt.to(dev)).cpu()
            comp = composite(xt, mt, bg, Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), self.model.mode)
        tiles = (comp.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        return np.concatenate(list(tiles), axis=1)

    @staticmethod
    def _letterbox(img: np.ndarray, lb: Letterbox, fill: float, interp: int) -> np.ndarray:
        rh, rw = lb.resized
        top, left = lb.offset
        shape = (lb.out_h, lb.out_w) + img.shape[2:]
        out = np.full(shape, fill, img.dtype if img.dtype == np.uint8 else np.float32)
        out[top:top + rh, left:left + rw] = cv2.resize(img, (rw, rh), interpolation=interp)
        return out

    @staticmethod
    def _letterbox_mask(obj: MaskObject, lb: Letterbox) -> np.ndarray:
        """The object's letterboxed soft mask in [0, 1]: ``_letterbox(obj.soft, lb, 0, INTER_LINEAR)``, computed on
        the object's box only for binary masks (zero beyond it; a soft mask may have a halo: whole frame)."""
        if obj.soft.dtype != np.uint8:
            return ObjectDepthEstimator._letterbox(obj.soft, lb, 0, cv2.INTER_LINEAR)
        rh, rw = lb.resized
        top, left = lb.offset
        sy, sx = rh / lb.in_h, rw / lb.in_w
        margin = int(math.ceil(max(sy, sx))) + 1  # INTER_LINEAR reads 2 taps around (i + 0.5) / s - 0.5
        rows, cols = obj.box
        out_roi = (slice(max(int(rows.start * sy) - margin, 0), min(int(math.ceil(rows.stop * sy)) + margin, rh)),
                   slice(max(int(cols.start * sx) - margin, 0), min(int(math.ceil(cols.stop * sx)) + margin, rw)))
        out = np.zeros((lb.out_h, lb.out_w), np.float32)
        small = resize_roi(obj.soft, (rh, rw), out_roi)
        out[top + out_roi[0].start:top + out_roi[0].stop, left + out_roi[1].start:left + out_roi[1].stop] = \
            small * np.float32(1 / 255)
        return out

    def _object_depth(self, depth_s: np.ndarray, mask_s: np.ndarray, guide_s: np.ndarray, view, image: np.ndarray,
                      obj: MaskObject, roi: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """One object's depth on the frame box ``roi`` from its network output: (depth (R, C) float32, NaN where
        none; its pixels with a depth; {reason: pixels} for its pixels without one)."""
        own = mask_s >= self.cfg.mask_threshold  # the network pixels that are this object's own depth samples
        binary = obj.binary[roi]
        if self.cfg.upsample == "bilinear":
            d, ok = self._back(depth_s, own, view, image.shape[:2], roi)
            ok &= binary & (d > 0)  # NaN > 0 is False
            return d, ok, {}
        if not own.any():  # thinner than a network pixel everywhere: no sample of its own to take depth from
            return np.full(binary.shape, np.nan, np.float32), np.zeros_like(binary), {"unseen": obj.pixels}
        box = obj.box  # the upsampling runs on the object's box; a grown roi (fusion's ring) is NaN around it
        if isinstance(view, VirtualCamera):
            ys, xs, factor = view.view_coords(box)
        else:
            ys, xs = letterbox_coords(view, box)
            factor = None
        bad = own & ~(np.isfinite(depth_s) & (depth_s > 0))  # NaN, inf or <= 0 from the network: NaN spreads to the pixels it reaches
        if bad.any():
            depth_s = np.where(bad, np.float32(np.nan), depth_s)
        up = joint_bilateral_upsample(pack_samples(depth_s, own, guide_s),
                                      image[box], obj.binary[box], ys, xs, self.cfg.upsample_sigma_color)
        d = up.depth if factor is None else up.depth * factor
        missing = {}
        if up.off_view:
            missing["off_view"] = up.off_view
        lost = int(np.count_nonzero(obj.binary[box])) - up.off_view - int(np.count_nonzero(up.ok))
        if lost:
            missing["invalid" if bad.any() else "unseen"] = lost
        if roi == box:
            return d, up.ok, missing
        r0, c0 = box[0].start - roi[0].start, box[1].start - roi[1].start
        inner = (slice(r0, r0 + d.shape[0]), slice(c0, c0 + d.shape[1]))
        full = np.full(binary.shape, np.nan, np.float32)
        full[inner] = d
        ok = np.zeros_like(binary)
        ok[inner] = up.ok
        return full, ok, missing

    @staticmethod
    def _missing_warning(obj: MaskObject, missing: dict[str, int]) -> str:
        why = {"off_view": "outside the network's view (recenter_fill above 1 zooms past the object)",
               "unseen": "not seen by the network: no network pixel is this object's (thinner than the network's "
                         "resolution; recenter zooms onto the object)",
               "invalid": "without a valid network depth (NaN, inf or <= 0 from the network)"}
        parts = [f"{n} ({100 * n / max(obj.pixels, 1):.0f}%) {why[reason]}" for reason, n in missing.items()]
        return f"object {obj.id}: no depth for " + "; ".join(parts)

    @staticmethod
    def _back(depth_s: np.ndarray, valid_s: np.ndarray, view, size: tuple[int, int],
              roi: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """Network-resolution depth -> the input-resolution pixels of ``roi`` (NaN where invalid).

        A letterbox leaves z unchanged: depth and validity are resized together (``resize_roi``: exactly
        ``cv2.resize`` of the whole frame, evaluated on the ROI only); a virtual camera rescales z per pixel.
        """
        if isinstance(view, VirtualCamera):
            d, ok = view.unwarp_depth(depth_s, valid_s)
            return np.where(ok, d, np.nan).astype(np.float32)[roi], ok[roi]
        rh, rw = view.resized
        top, left = view.offset
        dv = np.stack([np.where(valid_s, depth_s, 0), valid_s], -1).astype(np.float32)[top:top + rh, left:left + rw]
        out = resize_roi(dv, size, roi)
        ok = out[..., 1] > 0.999  # depth and validity in one pass: no mixing with pixels outside the object
        return np.where(ok, out[..., 0], np.nan).astype(np.float32), ok
