"""Training samples from ROS 2 bags (mcap, sqlite3): one per object, cropped like the node, sensor-supervised.

A bag is read exactly as ``bag eval`` and the live node read it (bgprompt_core.messages.bag_frames: the same topic defaults
and fallbacks, type checks, synchronizer and decoding); every ``stride``-th synchronized frame is used. Each
object of the frame's mask (16UC1 / 32SC1 instance labels, or a mono8 mask as one object) becomes one sample:

- the node's ``recenter`` view of it (a virtual camera at the object, spanning ``recenter_fill`` of the input:
  recenter.py), the image with a white border, the soft object mask (PNet's input and Eq. 1's M);
- ``depth``: the sensor's readings warped into that view, ``weight``: the trustworthy ones (data/trust.py), the
  only pixels of the loss (sensor_loss.py). A warped pixel that mixes a trusted reading with any other is dropped;
- ``ref`` / ``ref_mask``: the ground truth when the bag has it, for VALIDATION only; else the trusted readings.

Objects with fewer than ``min_pixels`` trusted pixels at network resolution, or no defined normal there, are
skipped and counted (``BagStats``). A frame that does not decode or whose parts differ in size is skipped and
counted under its reason; a bag cut short keeps the frames before the cut and says so; a bag that cannot be
opened, lacks a topic or carries a topic of the wrong type is a ConfigError before anything is read.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bgprompt_core.messages import bag_frames as bf
from bgprompt_core.method.config import ConfigError
from bgprompt_core.frame.recenter import recenter_camera
from bgprompt_core.messages.decode import ConversionError, decode_frame

from .trust import REASONS, TrustConfig, sensor_normals, trusted_pixels

log = logging.getLogger("bgprompt.train.bags")
MIN_FRAME_PIXELS = 16  # objects with fewer mask pixels in the frame are not objects (as bag eval's truth_objects)


@dataclass
class BagSelection:
    """Which synchronized frames and objects of a bag become training samples: ``BagReadConfig``'s fields and
    ``TrainConfig``'s bag flags (one definition for both).

    Args:
        image_topic, info_topic, mask_topic, depth_topic, truth_topic (str | None): topics; None: bag eval's
            defaults and common driver layouts (bgprompt_core.messages.bag_frames.TOPICS / FALLBACKS). Ground truth is read
            when its topic is present, for validation only.
        stride (int, default 1): use every stride-th synchronized frame.
        sync (str, default "exact"), slop (float, default 0.015): the node's synchronization.
        mask_labels (bool, default False): mono8 mask values are object ids (the node's mask_labels).
        min_pixels (int, default 32): trusted pixels an object needs at network resolution.
        supervision (str, default "sensor"): "truth" keeps every object with ``min_pixels`` of ground truth instead
            (the comparison runs of TrainConfig.supervision; the sensor's figures are still counted).
    """

    image_topic: str | None = None
    info_topic: str | None = None
    mask_topic: str | None = None
    depth_topic: str | None = None
    truth_topic: str | None = None
    stride: int = 1
    sync: str = "exact"
    slop: float = 0.015
    mask_labels: bool = False
    min_pixels: int = 32
    supervision: str = "sensor"

    def check_selection(self) -> None:
        if self.supervision not in ("sensor", "truth"):
            raise ConfigError(f"supervision must be sensor or truth, got {self.supervision!r}")
        if self.stride < 1:
            raise ConfigError(f"stride must be >= 1, got {self.stride}")
        if self.sync not in ("exact", "approximate"):
            raise ConfigError(f"sync must be exact or approximate, got {self.sync!r}")
        if not self.slop > 0:
            raise ConfigError(f"slop must be > 0, got {self.slop}")
        if self.min_pixels < 1:
            raise ConfigError(f"min_pixels must be >= 1, got {self.min_pixels}")

    def selection(self) -> dict:
        """The BagSelection fields and their values (what TrainConfig passes on to BagReadConfig)."""
        return {f.name: getattr(self, f.name) for f in fields(BagSelection)}


@dataclass
class BagReadConfig(BagSelection):
    """How bags are cut into training samples: the ``BagSelection`` and

    Args:
        recenter_fill (float, default 0.8): the share of the input the re-centred object spans (the node's).
    """

    recenter_fill: float = 0.8

    def __post_init__(self) -> None:
        self.check_selection()
        if not 0 < self.recenter_fill <= 1.5:
            raise ConfigError(f"recenter_fill must lie in (0, 1.5], got {self.recenter_fill}")


@dataclass
class BagStats:
    """What one bag gave: frames used and skipped (by reason), objects supervised and skipped, pixels."""

    bag: str
    frames: int = 0
    skipped_frames: dict[str, int] = field(default_factory=dict)
    objects: int = 0  # objects supervised (one sample each)
    objects_seen: int = 0
    skipped_objects: dict[str, int] = field(default_factory=dict)
    object_pixels: int = 0  # mask pixels of every object seen, in the recorded frames
    rejected: dict[str, int] = field(default_factory=lambda: {k: 0 for k in REASONS})  # of those, left out by rule
    trusted_pixels: int = 0  # of those, the trusted readings
    supervised_pixels: int = 0  # pixels of the loss, at network resolution
    input_pixels: int = 0  # object-mask pixels at network resolution
    has_truth: bool = False
    corrupt_messages: int = 0
    error: str | None = None  # why the reading stopped early (a truncated bag)

    def skip_frame(self, reason: str) -> None:
        if reason not in self.skipped_frames:
            log.warning("%s: frame skipped: %s", self.bag, reason)
        self.skipped_frames[reason] = self.skipped_frames.get(reason, 0) + 1

    def skip_object(self, reason: str) -> None:
        self.skipped_objects[reason] = self.skipped_objects.get(reason, 0) + 1

    def merge(self, other: "BagStats") -> None:
        """Add another rank's share of the same bag."""
        for k in ("frames", "objects", "objects_seen", "object_pixels", "trusted_pixels", "supervised_pixels",
                  "input_pixels", "corrupt_messages"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for d, o in ((self.skipped_frames, other.skipped_frames), (self.skipped_objects, other.skipped_objects),
                     (self.rejected, other.rejected)):
            for k, v in o.items():
                d[k] = d.get(k, 0) + v
        self.has_truth |= other.has_truth
        self.error = self.error or other.error

    def as_dict(self) -> dict:
        return asdict(self)


def is_bag(spec: str) -> bool:
    """``bag:DIR``, or a rosbag2 directory (metadata.yaml; mcap or sqlite3 inside): what rosbags opens."""
    if spec.startswith("bag:"):
        return True
    p = Path(spec)
    return p.is_dir() and (p / "metadata.yaml").is_file()


def bag_path(spec: str) -> Path:
    return Path(spec[4:] if spec.startswith("bag:") else spec)


def _objects(mask: np.ndarray) -> dict[int, np.ndarray]:
    if mask.dtype in (np.bool_, np.uint8):
        return {1: mask > 0}
    return {int(i): mask == i for i in np.unique(mask) if i > 0}


def object_sample(rgb: np.ndarray, K: np.ndarray, obj: np.ndarray, sensor: np.ndarray, trusted: np.ndarray,
                  truth: np.ndarray | None, size: int, span: float = 0.8,
                  smooth_sigma: float = 1.0) -> dict[str, torch.Tensor]:
    """One object's training sample in the node's ``recenter`` view (tensors, see the module docstring). Only the
    ``trusted`` readings of ``sensor`` are read: every other pixel of it may hold anything."""
    cam = recenter_camera(obj, K, (size, size), span)
    image = cam.warp_image(rgb, border=(255, 255, 255)).astype(np.float32) / 255.0
    mask = np.clip(cam.warp_image(obj.astype(np.float32)), 0, 1)
    depth, weight = cam.warp_depth(np.where(trusted, sensor, 0).astype(np.float32), trusted)
    if truth is not None:
        ok = obj & np.isfinite(truth) & (truth > 0)
        ref, ref_mask = cam.warp_depth(np.where(ok, truth, 0).astype(np.float32), ok)
    else:
        ref, ref_mask = depth, weight
    t = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
         "mask": torch.from_numpy(mask)[None], "depth": torch.from_numpy(depth),
         "weight": torch.from_numpy(weight.astype(np.float32)), "K": torch.from_numpy(cam.K_new.astype(np.float32)),
         "ref": torch.from_numpy(ref.astype(np.float32)),
         "ref_mask": torch.from_numpy((ref_mask & (mask > 0.5)).astype(np.float32))}
    normals = sensor_normals(t["depth"][None], t["weight"][None], t["K"][None], smooth_sigma)
    t["normal_pixels"] = torch.tensor(int(torch.isfinite(normals).all(-1).sum()))
    ref_normals = sensor_normals(t["ref"][None], t["ref_mask"][None], t["K"][None], smooth_sigma)
    t["ref_normal_pixels"] = torch.tensor(int(torch.isfinite(ref_normals).all(-1).sum()))
    return t


def bag_samples(spec: str, size: int, cfg: BagReadConfig, trust: TrustConfig | None = None, rank: int = 0,
                world: int = 1, progress: bool = True) -> tuple[list[tuple[int, int, dict]], BagStats]:
    """This rank's share (every ``world``-th used frame) of a bag's object samples, as (frame index, object id,
    sample), and what the share gave."""
    trust = trust or TrustConfig()
    path = bag_path(spec)
    stats = BagStats(str(path))
    if not path.exists():
        raise ConfigError(f"bag {path} does not exist")
    try:
        reader_cm = bf.open_reader(path)
        reader = reader_cm.__enter__()
    except Exception as exc:  # no metadata.yaml, a cut mcap header, not a bag at all
        raise ConfigError(f"{path}: not a readable ROS 2 bag ({type(exc).__name__}: {exc})") from None
    out: list[tuple[int, int, dict]] = []
    try:
        wanted = {"image": cfg.image_topic, "camera_info": cfg.info_topic, "mask": cfg.mask_topic,
                  "depth": cfg.depth_topic}
        names = bf.resolve_topics(reader, wanted)
        truth = cfg.truth_topic or bf.TOPICS["truth"]
        if truth in {c.topic for c in reader.connections}:
            names["truth"] = truth
            stats.has_truth = True
        elif cfg.truth_topic:
            raise ConfigError(f"{path}: no truth topic {cfg.truth_topic}")
        for what, n in bf.check_types(reader, names).items():
            log.warning("%s: %d message(s) on %s left out: not a type training reads", path, n, what)
        read = bf.ReadStats()
        sets = bf.synced_sets(reader, names, list(names), cfg.sync, cfg.slop, read, msgtypes=bf.MSGTYPES)
        bar = tqdm(total=bf.image_count(reader, names), unit="frame", desc=f"read {path.name}",
                   disable=not progress, leave=False)
        index = -1
        while True:
            try:
                msgs = next(sets)
            except StopIteration:
                break
            except Exception as exc:  # a truncated bag: keep what was read, say where it stopped
                stats.error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: reading stopped after %d synchronized frame(s): %s", path, index + 1, stats.error)
                break
            bar.update(1)
            index += 1
            if index % cfg.stride or (index // cfg.stride) % world != rank:
                continue
            out += _frame_samples(msgs, index, size, cfg, trust, stats)
        bar.close()
        stats.corrupt_messages = read.corrupt_messages
    finally:
        reader_cm.__exit__(None, None, None)
    return out, stats


def _frame_samples(msgs: dict, index: int, size: int, cfg: BagReadConfig, trust: TrustConfig,
                   stats: BagStats) -> list[tuple[int, int, dict]]:
    try:
        f = decode_frame({**msgs, "image": bf.decompress_image(msgs["image"])}, sensor_key="depth",
                         mask_labels=cfg.mask_labels)
    except (ConversionError, ValueError) as exc:
        stats.skip_frame(str(exc))
        return []
    problem = f.size_problem()
    if problem is not None:
        stats.skip_frame(problem)
        return []
    if cfg.supervision == "truth" and f.truth is None:
        stats.skip_frame("no ground truth (--supervision truth)")
        return []
    stats.frames += 1
    objects = {i: m for i, m in _objects(f.mask).items() if m.sum() >= MIN_FRAME_PIXELS}
    if not objects:
        stats.skip_object("empty mask")
    occupied = np.asarray(f.mask) > 0
    sensor = np.nan_to_num(f.sensor, nan=0.0)
    out = []
    for oid, obj in objects.items():
        trusted, counts = trusted_pixels(sensor, obj, f.K, occupied, trust,
                                         np.random.default_rng([index, oid]))
        stats.objects_seen += 1
        stats.object_pixels += counts["object"]
        stats.trusted_pixels += counts["trusted"]
        for k in REASONS:
            stats.rejected[k] += counts[k]
        by_truth = cfg.supervision == "truth"
        if counts["trusted"] < cfg.min_pixels and not by_truth:
            stats.skip_object("too few trustworthy readings")
            continue
        s = object_sample(f.rgb, f.K, obj, sensor, trusted, f.truth, size, cfg.recenter_fill, trust.smooth_sigma)
        n = int(s["weight"].sum())
        usable = (int(s["ref_mask"].sum()) >= cfg.min_pixels and int(s.pop("ref_normal_pixels")) > 0) if by_truth \
            else (n >= cfg.min_pixels and int(s.pop("normal_pixels")) > 0)
        s.pop("normal_pixels", None)
        s.pop("ref_normal_pixels", None)
        if not usable:
            stats.skip_object("too few ground-truth pixels at network resolution" if by_truth
                              else "too few trustworthy readings at network resolution")
            continue
        stats.objects += 1
        stats.supervised_pixels += n
        stats.input_pixels += int((s["mask"] > 0.5).sum())
        out.append((index, oid, s))
    return out


def no_pixels_message(stats: list[BagStats]) -> str:
    """Why a set of bags gave nothing to train on, in numbers."""
    parts = []
    for s in stats:
        rej = ", ".join(f"{k} {v}" for k, v in s.rejected.items() if v)
        parts.append(f"{s.bag}: {s.frames} frame(s) used, skipped frames {s.skipped_frames or 0}, skipped objects "
                     f"{s.skipped_objects or 0}{f' (rejected pixels: {rej})' if rej else ''}"
                     f"{f', reading stopped: {s.error}' if s.error else ''}")
    return ("no object pixel with a trustworthy sensor reading to supervise the prompt (holes, depth edges, "
            "see-through or inconsistent readings everywhere, or no objects): " + "; ".join(parts))
