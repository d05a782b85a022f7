"""``bgprompt bag eval``: the node's pipeline over a recorded bag, per-frame metrics against the bag's depth.

Uses the node's own conversions, synchronizer and parameter mapping (and bgprompt_core.messages.bag_frames to read),
so a bag is evaluated exactly as the node would process it live. The summary's files: report.py.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bgprompt_core.messages.bag_frames import (MSGTYPES, TOPICS, ReadStats, check_types, decompress_image,
                                               image_count, open_reader, resolve_topics, synced_sets, typestore)
from bgprompt_core.method.config import ConfigError
from bgprompt_core.frame.estimator import InputError, ObjectDepthEstimator
from bgprompt_core.geometry import backproject_np

from .. import conversions, messages
from ..params import estimator_config_from_params
from .report import CLOUD_KEYS, SENSOR, BagError, summarize_rows, write_bag_outputs
from .writer import BagWriter, DiskFull

log = logging.getLogger("bgprompt.bag")


@dataclass
class Combo:
    name: str
    params: dict
    estimator: ObjectDepthEstimator | None = None
    relative: ObjectDepthEstimator | None = None  # for cross-validated metric error of align-to-sensor
    rows: list = field(default_factory=list)



MIN_OBJECT_PIXELS = 16


def truth_objects(mask: np.ndarray, truth: np.ndarray) -> dict[int, np.ndarray]:
    """{object id: its pixels with ground truth} for every object of the frame's mask with at least 16 of them:
    instance labels (uint16 / int32), or one object (id 1) for a binary mask."""
    valid = np.isfinite(truth) & (truth > 0)
    if mask.dtype in (np.uint8, np.bool_):
        ids = {1: mask > 0}
    else:
        ids = {int(i): mask == i for i in np.unique(mask) if i > 0}
    return {i: m & valid for i, m in ids.items() if (m & valid).sum() >= MIN_OBJECT_PIXELS}


def object_cloud_metrics(clouds: dict[int, np.ndarray], truth: np.ndarray, objects: dict[int, np.ndarray],
                         K: np.ndarray) -> list[dict]:
    """Each ground-truth object's cloud (``clouds``: id -> (N, 3) metres) against the truth, in millimetres:
    Chamfer, accuracy and completeness within 10 mm, centroid error (bgprompt_core.evaluation.cloud_metrics). An object with
    no cloud, or an empty one, scores Chamfer and centroid inf, accuracy NaN, completeness 0: a failure that the
    summary counts, never one that is left out."""
    from bgprompt_core.evaluation import cloud_metrics as cm

    out = []
    for oid, obj in objects.items():
        pts = np.asarray(clouds.get(oid, np.zeros((0, 3))), np.float64).reshape(-1, 3)
        grid = backproject_np(np.where(obj, truth, np.nan).astype(np.float32), K)[obj]
        e = cm.cloud_errors(pts, cm.surface_samples(truth, obj, K))
        out.append({"id": oid, "points": e["points"], "chamfer_mm": e["chamfer_mm"],
                    "accuracy_10mm": e["accuracy_10mm"], "completeness_10mm": e["completeness_10mm"],
                    "centroid_mm": cm.centroid_error_mm(pts, grid)})
    return out


def _with_objects(row: dict, objects: list[dict]) -> dict:
    """The frame row's cloud figures: the objects, and their means (inf or NaN when any object failed)."""
    row["objects"] = objects
    if objects:
        with np.errstate(invalid="ignore"):
            row.update({k: float(np.mean([o[k] for o in objects])) for k in CLOUD_KEYS})
    return row


def cross_validated_metric_error(rel: np.ndarray, ref: np.ndarray, obj: np.ndarray, mode: str) -> dict:
    """Fit the scale (or scale+shift) on one checkerboard half of the valid pixels, score metres on the other."""
    from bgprompt_core.rgbd.alignment import fit_to_sensor

    v, u = np.indices(rel.shape)
    half = (u + v) % 2 == 0
    ok = obj & np.isfinite(ref) & (ref > 0) & np.isfinite(rel)
    fit = fit_to_sensor(rel, np.where(half, ref, np.nan), ok & half, mode)
    test = ok & ~half
    if fit is None or test.sum() < 8:
        return {"metric_rmse_m": float("nan"), "metric_absrel": float("nan")}
    err = fit.scale * rel[test] + fit.shift - ref[test]
    return {"metric_rmse_m": float(np.sqrt(np.mean(err**2))), "metric_absrel": float(np.mean(np.abs(err) / ref[test]))}


def _cloud(ts, header, res, rgb, cloud_mode: str, params: dict):
    """The node's cloud for this result, with the node's field choices (its params)."""
    return messages.object_cloud(ts.types["sensor_msgs/msg/PointCloud2"], ts.types["sensor_msgs/msg/PointField"],
                                 header, res, rgb, with_rgb=params.get("cloud_rgb", True),
                                 organized=cloud_mode == "organized", labels=params.get("cloud_labels", True))


def _prepare(combos: list[Combo]) -> None:
    """Build each combination's estimator (and, for align-to-sensor, the relative one its metric error needs)."""
    for c in combos:
        if c.estimator is None:
            c.estimator = ObjectDepthEstimator(estimator_config_from_params(c.params))
        if c.params.get("scale") == "align-to-sensor" and c.relative is None:
            c.relative = ObjectDepthEstimator(estimator_config_from_params({**c.params, "scale": "relative",
                                                                            "fusion": "none"}))


def _input_topics(reader, topics: dict | None, segment: bool) -> tuple[dict[str, str], list[str]]:
    """{key: topic} and the keys to synchronise; the reference is the ground truth where the bag has it (bag make
    writes it), else the sensor itself. Topic types are checked by the caller (check_types)."""
    wanted = {"image": None, "camera_info": None, "depth": None, **({} if segment else {"mask": None}),
              **(topics or {})}
    names = resolve_topics(reader, wanted)
    keys = ["image", "camera_info", "depth"] + ([] if segment else ["mask"])
    truth = (topics or {}).get("truth") or TOPICS["truth"]
    if truth in {c.topic for c in reader.connections}:
        names["truth"] = truth
        keys.append("truth")
    return names, keys


class _OutBag:
    """The node's outputs for each frame of the first combination, written to an mcap bag. A full disk closes it
    (readable, with the frames before) and stops it; the evaluation goes on and ``stopped`` says why."""

    TOPICS = (("depth", "/object_depth/image", "sensor_msgs/msg/Image"),
              ("info", "/object_depth/camera_info", "sensor_msgs/msg/CameraInfo"),
              ("cloud", "/object_points", "sensor_msgs/msg/PointCloud2"))

    def __init__(self, path: Path, ts, cloud_mode: str):
        self.ts, self.cloud_mode, self.path = ts, cloud_mode, Path(path)
        if self.path.exists():
            raise FileExistsError(f"--out-bag {self.path} exists; bags are never overwritten")
        self.frames, self.stopped = 0, None
        self.writer = BagWriter(self.path, "mcap")
        self.writer.open()
        self.conns = {k: self.writer.add_connection(n, t, typestore=ts) for k, n, t in self.TOPICS}

    def write(self, stamp: int, matched: dict, res, rgb: np.ndarray, params: dict) -> None:
        if self.stopped:
            return
        header = matched["image"].header
        msgs = {"depth": messages.depth_image(self.ts.types["sensor_msgs/msg/Image"], header, res),
                "info": matched["camera_info"], "cloud": _cloud(self.ts, header, res, rgb, self.cloud_mode, params)}
        try:
            for key, msg in msgs.items():
                self.writer.write(self.conns[key], stamp, self.ts.serialize_cdr(msg, msg.__msgtype__))
        except DiskFull as exc:
            self._stop(exc)
            return
        self.frames += 1

    def _stop(self, exc: DiskFull) -> None:
        self.frames = exc.kept // len(self.TOPICS)  # written in frame order: the whole frames kept
        self.stopped = f"{exc} ({self.frames} whole frames)"
        log.warning("--out-bag stopped: %s", self.stopped)

    def summary(self) -> dict:
        return {"path": str(self.path), "frames": self.frames, "error": self.stopped}

    def close(self) -> None:
        try:
            self.writer.close()
        except DiskFull as exc:  # the last chunk could not be written: what reached the disk was kept
            self._stop(exc)


def _frame_row(c: Combo, stamp: int, f, matched: dict, res, objects: dict[int, np.ndarray]) -> dict:
    """One combination's metrics for one frame (frame_metrics, metric error, each object's cloud in mm)."""
    from bgprompt_core.evaluation.protocol import frame_metrics  # torch: not imported for `bag make`

    ref = f.truth if f.truth is not None else f.sensor
    obj = res.instance > 0 if f.mask is None else (f.mask > 0)
    row = {"stamp": stamp, **frame_metrics(res.depth, ref, obj, f.K), "network_ms": res.timing_ms["network"]}
    if c.relative is not None:
        rel = c.relative.estimate(f.rgb, f.K, f.mask)
        row.update(cross_validated_metric_error(rel.depth, ref, obj, c.params.get("align", "scale")))
    if f.truth is not None and res.units == "metres":
        clouds = {oid: res.points[res.instance == oid] for oid in res.object_ids}
        return _with_objects(row, object_cloud_metrics(clouds, f.truth, objects, f.K))
    row["objects_missing"] = len(objects)  # relative depth: no cloud in metres to score
    return row


def _sensor_row(stamp: int, f, obj: np.ndarray, objects: dict[int, np.ndarray], labels: np.ndarray) -> dict:
    """The raw sensor scored as a combination against the ground truth: the same frame metrics (its depth as the
    prediction), its metric error directly (it is metric already), and each object's cloud from its depth."""
    from bgprompt_core.evaluation.protocol import frame_metrics

    row = {"stamp": stamp, **frame_metrics(f.sensor, f.truth, obj, f.K)}
    ok = obj & np.isfinite(f.sensor) & np.isfinite(f.truth) & (f.truth > 0)
    err = f.sensor[ok].astype(np.float64) - f.truth[ok]
    row["metric_rmse_m"] = float(np.sqrt(np.mean(err**2))) if ok.sum() >= 8 else float("nan")
    row["metric_absrel"] = float(np.mean(np.abs(err) / f.truth[ok])) if ok.sum() >= 8 else float("nan")
    pts = backproject_np(f.sensor, f.K)
    seen = np.isfinite(f.sensor)
    labelled = labels.dtype not in (np.uint8, np.bool_)
    clouds = {oid: pts[((labels == oid) if labelled else (labels > 0)) & seen] for oid in objects}
    return _with_objects(row, object_cloud_metrics(clouds, f.truth, objects, f.K))


class _Evaluation:
    """Per-frame work of ``eval_bag``: every combination on a frame, rows, the worst frames, the output bag.

    A frame that cannot be used (it does not decode, or its parts have other sizes than the image) is skipped
    and counted under its reason; a combination that refuses a frame (InputError) records it as skipped."""

    def __init__(self, combos: list[Combo], out: _OutBag | None):
        self.combos, self.out = combos, out
        self.frames = self.skipped = 0
        self.reasons: dict[str, int] = {}  # skipped frames per reason
        self.sensor_rows: list[dict] = []  # the raw sensor against the ground truth (SENSOR)
        self.worst: list[tuple] = []  # (si_rmse, stamp, rgb, prediction, reference) of the first combination

    def skip(self, stamp: int, reason: str) -> None:
        self.skipped += 1
        if reason not in self.reasons:
            log.warning("frame %d skipped: %s", stamp, reason)
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def frame(self, matched: dict) -> None:
        head = matched["image"].header.stamp  # the frame's stamp (the set may be older than the last message)
        stamp = head.sec * 10**9 + head.nanosec
        try:
            f = conversions.decode_frame({**matched, "image": decompress_image(matched["image"])},
                                         sensor_key="depth")
        except (conversions.ConversionError, ValueError) as exc:
            self.skip(stamp, str(exc))
            return
        problem = f.size_problem()
        if problem is not None:
            self.skip(stamp, problem)
            return
        labels = None if f.mask is None else f.mask  # rembg: each combination's own segmentation, else the first's
        for ci, c in enumerate(self.combos):
            objects = {} if f.truth is None or labels is None else truth_objects(labels, f.truth)
            try:
                res = c.estimator.estimate(f.rgb, f.K, f.mask, f.sensor)
            except (InputError, ValueError) as exc:  # this combination refuses the frame (bad input)
                c.rows.append({"stamp": stamp, "skipped": str(exc), "objects_missing": len(objects)})
                continue
            if f.mask is None and f.truth is not None:
                objects = truth_objects(res.instance, f.truth)
                labels = res.instance if labels is None else labels
            row = _frame_row(c, stamp, f, matched, res, objects)
            c.rows.append(row)
            if ci == 0:
                if np.isfinite(row["si_rmse"]):
                    ref = f.truth if f.truth is not None else f.sensor
                    self.worst = sorted(self.worst + [(row["si_rmse"], stamp, f.rgb, res.depth, ref)],
                                        key=lambda x: -x[0])[:6]
                if self.out is not None:
                    self.out.write(stamp, matched, res, f.rgb, c.params)
        if f.truth is not None and f.sensor is not None:  # the plain alternative, scored the same way
            if labels is None:
                self.sensor_rows.append({"stamp": stamp, "skipped": "no object mask (rembg found none)"})
            else:
                self.sensor_rows.append(_sensor_row(stamp, f, labels > 0, truth_objects(labels, f.truth), labels))
        self.frames += 1




def eval_bag(bag: str | Path, combos: list[Combo], topics: dict[str, str | None] | None = None,
             segment: bool = False, out_dir: str | Path | None = None, json_path: str | Path | None = None,
             out_bag: str | Path | None = None, sync: str = "exact", slop: float = 0.015,
             progress: bool = True, cloud_mode: str = "dense") -> dict:
    """Run the node's pipeline over a bag for each combination; per-frame metrics against the bag's depth.

    A truncated or corrupt bag ends the reading with a BagError after the partial results are written; one
    corrupt message is counted and skipped."""
    bag = Path(bag)
    if out_bag is not None and Path(out_bag).resolve() == bag.resolve():
        raise ConfigError("--out-bag must not be the input bag: the input is never modified")
    _prepare(combos)
    ev = _Evaluation(combos, None)
    t0 = time.perf_counter()
    run = _read_bag(bag, ev, topics, segment, out_bag, sync, slop, progress, cloud_mode)
    summary = _summary(bag, combos, ev, run, time.perf_counter() - t0)
    write_bag_outputs(summary, out_dir, json_path, ev.worst)
    if run.error is not None:
        raise BagError(f"{bag}: reading stopped after {ev.frames} evaluated frame(s): {run.error}. "
                       f"Partial results were written.")
    if ev.out is not None and ev.out.stopped:
        raise BagError(f"--out-bag stopped: {ev.out.stopped}. The evaluation itself went on: {ev.frames} frame(s) "
                       f"evaluated, results written.")
    return summary


@dataclass
class _Run:
    """How the reading of one bag went: why it stopped early, its read statistics, messages left out, topics."""

    error: str | None = None
    read: ReadStats = field(default_factory=ReadStats)
    left_out: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)


def _read_bag(bag: Path, ev: _Evaluation, topics: dict | None, segment: bool, out_bag: str | Path | None,
              sync: str, slop: float, progress: bool, cloud_mode: str) -> _Run:
    """Every synchronised set of the bag through ``ev``; a bag that cannot be opened or read on ends it (error)."""
    from contextlib import ExitStack, closing

    from tqdm import tqdm

    run = _Run()
    with ExitStack() as stack:
        try:
            reader = stack.enter_context(open_reader(bag))
        except Exception as exc:  # not a bag rosbags can open (no metadata.yaml, cut mcap): nothing evaluated
            run.error = f"{type(exc).__name__}: {exc}"
            return run
        run.names, keys = _input_topics(reader, topics, segment)
        run.left_out = check_types(reader, run.names)  # a wrong topic type: ConfigError before anything is read
        for what, n in run.left_out.items():
            log.warning("%d message(s) on %s left out: not a type bag eval reads", n, what)
        if out_bag is not None:
            ev.out = stack.enter_context(closing(_OutBag(Path(out_bag), typestore(), cloud_mode)))
        bar = stack.enter_context(tqdm(total=image_count(reader, run.names), unit="frame",
                                       desc=f"bag eval {bag.name}", disable=not progress))
        sets = synced_sets(reader, run.names, keys, sync, slop, run.read, msgtypes=MSGTYPES)
        while True:
            try:
                matched = next(sets)
            except StopIteration:
                break
            except Exception as exc:  # truncated / corrupt bag: report how far we got, keep the partial results
                run.error = f"{type(exc).__name__}: {exc}"
                break
            bar.update(1)
            ev.frame(matched)  # what goes wrong with one frame skips that frame (see _Evaluation)
    return run


def _summary(bag: Path, combos: list[Combo], ev: _Evaluation, run: _Run, elapsed: float) -> dict:
    """eval_bag's result: what was read and skipped, each combination's summary (and the raw sensor's) and rows."""
    read = run.read
    summary = {"bag": str(bag), "frames": ev.frames, "skipped_frames": ev.skipped, "skip_reasons": ev.reasons,
               "corrupt_messages": read.corrupt_messages, "left_out_messages": run.left_out,
               "stamp_jumps": read.stamp_jumps,
               "last_stamp_jump_s": None if read.last_jump is None else (read.last_jump[1] - read.last_jump[0]) / 1e9,
               "seconds": elapsed, "frames_per_second": ev.frames / elapsed if elapsed > 0 else 0.0,
               "error": run.error, "out_bag": ev.out.summary() if ev.out is not None else None,
               "combos": [{"name": c.name, "params": c.params, **summarize_rows(c.rows)} for c in combos],
               "per_frame": {c.name: c.rows for c in combos}}
    if ev.sensor_rows:
        summary["combos"].append({"name": SENSOR, "params": {"depth_topic": run.names["depth"]},
                                  **summarize_rows(ev.sensor_rows)})
        summary["per_frame"][SENSOR] = ev.sensor_rows
    return summary
