"""ROS 2 bags without rosbag2_py: make a bag from renders, evaluate the node's pipeline on a bag.

Uses the pure-Python `rosbags` library (sqlite3 and mcap) and the node's own conversions, synchronizer
and parameter mapping, so a bag is evaluated exactly as the node would process it live.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bgprompt_core.messages.bag_frames import (MSGTYPES, TOPICS, ReadStats, check_types, decompress_image,  # noqa: F401
                                     image_count, open_reader, resolve_topics, storage_plugin, synced_sets, typestore)
from bgprompt_core.method.config import ConfigError
from bgprompt_core.errors import BgpromptError
from bgprompt_core.frame.estimator import InputError, ObjectDepthEstimator
from bgprompt_core.geometry import backproject_np
from bgprompt_core.evaluation.sensor_model import to_millimetres

from . import conversions
from .bag_writer import BagWriter, DiskFull
from .params import estimator_config_from_params

log = logging.getLogger("bgprompt.bag")
FRAME = "camera_color_optical_frame"


def _header(ts, stamp_ns: int, frame: str):
    H = ts.types["std_msgs/msg/Header"]
    T = ts.types["builtin_interfaces/msg/Time"]
    return H(stamp=T(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame)


def image_message(ts, arr: np.ndarray, encoding: str, stamp_ns: int, frame: str = FRAME):
    Img = ts.types["sensor_msgs/msg/Image"]
    h, w = arr.shape[:2]
    data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return Img(header=_header(ts, stamp_ns, frame), height=h, width=w, encoding=encoding, is_bigendian=0,
               step=data.size // h, data=data)


def camera_info_message(ts, K: np.ndarray, h: int, w: int, stamp_ns: int, frame: str = FRAME):
    Info = ts.types["sensor_msgs/msg/CameraInfo"]
    Roi = ts.types["sensor_msgs/msg/RegionOfInterest"]
    P = np.zeros((3, 4))
    P[:, :3] = K
    return Info(header=_header(ts, stamp_ns, frame), height=h, width=w, distortion_model="plumb_bob",
                d=np.zeros(5), k=np.asarray(K, float).reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1),
                binning_x=0, binning_y=0, roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def sensor_depth_m(sample: dict, sensor: str, rng: np.random.Generator) -> np.ndarray:
    """An RGB-D camera's depth (float metres, 0 = no reading) for a rendered sample.

    Tabletop renders carry their sensor's depth (materials included): used when ``sensor`` is its preset, or
    "stored" (whatever its preset: harsh-stereo, tof-like); for other renders the sensor model
    (bgprompt_core.evaluation.sensor_model) runs here, with dark surfaces (luminance < 0.12) as its only material cue.
    """
    from bgprompt_core.evaluation import sensor_model as sm

    if sensor == "none":
        return sample["depth"].astype(np.float32)
    if sensor == "stored":
        if "sensor_depth" not in sample:
            raise ConfigError("--sensor stored needs renders with their own sensor depth (bgprompt render tabletop)")
        return sample["sensor_depth"]
    if "sensor_depth" in sample and sample.get("sensor") == sensor:
        return sample["sensor_depth"]
    lum = sample["rgb"].astype(np.float64).mean(-1) / 255.0
    material = np.where((lum < 0.12) & (sample["depth"] > 0), sm.DARK, sm.DIFFUSE).astype(np.uint8)
    return sm.simulate(sample["depth"], sample["K"], sm.preset(sensor), rng, material)


def iter_render_samples(data_dir: str | Path, limit: int | None = None):
    """Samples of a `bgprompt render` directory (manifest.json + npz shards, see its manifest's conventions).

    A minimal reader on purpose: the ROS layer must not depend on the offline training package.
    """
    root = Path(data_dir)
    manifest = json.loads((root / "manifest.json").read_text())
    sensor = manifest.get("generator", {}).get("sensor")
    n = 0
    for shard in manifest["shards"]:
        with np.load(root / shard["file"]) as f:
            arrays = {k: f[k] for k in ("rgb", "depth", "mask", "K", "instance", "alpha", "sensor_depth") if k in f}
        for j in range(shard["count"]):
            if limit is not None and n >= limit:
                return
            yield {**{k: v[j] for k, v in arrays.items()}, "sensor": sensor}
            n += 1


def make_bag(data_dir: str | Path, out: str | Path, storage: str = "mcap", rate: float = 10.0,
             sensor: str = "d435-like", seed: int = 0, limit: int | None = None) -> dict:
    """A real ROS 2 bag from a `bgprompt render` directory: colour, camera_info, mask, the RGB-D sensor's
    16UC1 depth in mm (``sensor``: a sensor_model preset, 'none' or 'stored': a tabletop render's own) and, for
    evaluation only, the ground-truth depth (32FC1 metres, NaN where there is no surface). Tabletop renders give
    16UC1 instance labels of every object as the mask; other renders a mono8 mask."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; bags are never overwritten")
    ts = typestore()
    rng = np.random.default_rng(seed)
    start = 1_700_000_000 * 10**9
    count = 0
    with BagWriter(out, storage) as writer:
        conns = {k: writer.add_connection(TOPICS[k], "sensor_msgs/msg/CameraInfo" if k == "camera_info"
                                          else "sensor_msgs/msg/Image", typestore=ts) for k in TOPICS}
        for i, s in enumerate(iter_render_samples(data_dir, limit)):
            stamp = start + int(i * 1e9 / rate)
            h, w = s["depth"].shape
            if "instance" in s and "alpha" in s and "sensor_depth" in s:  # tabletop: every object, by instance
                mask = image_message(ts, np.where(s["alpha"] > 0, s["instance"], 0).astype(np.uint16), "16UC1", stamp)
            else:
                mask = image_message(ts, s["mask"].astype(np.uint8) * 255, "mono8", stamp)
            truth = np.where(s["depth"] > 0, s["depth"], np.nan).astype(np.float32)
            msgs = {"image": image_message(ts, s["rgb"], "rgb8", stamp),
                    "camera_info": camera_info_message(ts, s["K"], h, w, stamp), "mask": mask,
                    "depth": image_message(ts, to_millimetres(sensor_depth_m(s, sensor, rng)), "16UC1", stamp),
                    "truth": image_message(ts, truth, "32FC1", stamp)}
            try:
                for k, msg in msgs.items():
                    writer.write(conns[k], stamp, ts.serialize_cdr(msg, msg.__msgtype__))
            except DiskFull as exc:
                raise DiskFull(f"{exc} ({exc.kept // len(TOPICS)} whole frames of {data_dir})", exc.kept) from None
            count += 1
    if count == 0:
        raise ConfigError(f"{data_dir}: no samples")
    return {"frames": count, "topics": TOPICS, "storage": storage, "path": str(out)}


class BagError(BgpromptError, RuntimeError):
    """A bag that could not be read to the end; partial results were written."""


@dataclass
class Combo:
    name: str
    params: dict
    estimator: ObjectDepthEstimator | None = None
    relative: ObjectDepthEstimator | None = None  # for cross-validated metric error of align-to-sensor
    rows: list = field(default_factory=list)


CLOUD_KEYS = ("chamfer_mm", "accuracy_10mm", "completeness_10mm", "centroid_mm")
FRAME_KEYS = ("si_rmse", "normal_cos", "abs_rel", "abs_rel_ss", "coverage", "ref_coverage", "metric_rmse_m",
              "metric_absrel")
SENSOR = "sensor (raw depth)"  # the RGB-D sensor's own depth, scored like a combination (bags with ground truth)
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
    labels = params.get("cloud_labels", True)
    return conversions.cloud_message(ts.types["sensor_msgs/msg/PointCloud2"], ts.types["sensor_msgs/msg/PointField"],
                                     header, res.depth, res.K, rgb if params.get("cloud_rgb", True) else None,
                                     organized=cloud_mode == "organized", label=res.instance if labels else None,
                                     source=res.source if labels else None)


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
        msgs = {"depth": conversions.depth_image_message(self.ts.types["sensor_msgs/msg/Image"], header, res.depth),
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
    from contextlib import ExitStack, closing

    from tqdm import tqdm

    bag = Path(bag)
    if out_bag is not None and Path(out_bag).resolve() == bag.resolve():
        raise ConfigError("--out-bag must not be the input bag: the input is never modified")
    _prepare(combos)
    ts = typestore()
    error, read, left_out = None, ReadStats(), {}
    ev = _Evaluation(combos, None)
    t0 = time.perf_counter()
    with ExitStack() as stack:
        try:
            reader = stack.enter_context(open_reader(bag))
        except Exception as exc:  # not a bag rosbags can open (no metadata.yaml, cut mcap): nothing evaluated
            reader, error = None, f"{type(exc).__name__}: {exc}"
        if reader is not None:
            names, keys = _input_topics(reader, topics, segment)
            left_out = check_types(reader, names)  # a wrong topic type: ConfigError before anything is read
            for what, n in left_out.items():
                log.warning("%d message(s) on %s left out: not a type bag eval reads", n, what)
            if out_bag is not None:
                ev.out = stack.enter_context(closing(_OutBag(Path(out_bag), ts, cloud_mode)))
            bar = stack.enter_context(tqdm(total=image_count(reader, names), unit="frame",
                                           desc=f"bag eval {bag.name}", disable=not progress))
            sets = synced_sets(reader, names, keys, sync, slop, read, msgtypes=MSGTYPES)
            while True:
                try:
                    matched = next(sets)
                except StopIteration:
                    break
                except Exception as exc:  # truncated / corrupt bag: report how far we got, keep the partial results
                    error = f"{type(exc).__name__}: {exc}"
                    break
                bar.update(1)
                ev.frame(matched)  # what goes wrong with one frame skips that frame (see _Evaluation)
    elapsed = time.perf_counter() - t0
    summary = {"bag": str(bag), "frames": ev.frames, "skipped_frames": ev.skipped, "skip_reasons": ev.reasons,
               "corrupt_messages": read.corrupt_messages, "left_out_messages": left_out,
               "stamp_jumps": read.stamp_jumps,
               "last_stamp_jump_s": None if read.last_jump is None else (read.last_jump[1] - read.last_jump[0]) / 1e9,
               "seconds": elapsed, "frames_per_second": ev.frames / elapsed if elapsed > 0 else 0.0, "error": error,
               "out_bag": ev.out.summary() if ev.out is not None else None,
               "combos": [{"name": c.name, "params": c.params, **summarize_rows(c.rows)} for c in combos],
               "per_frame": {c.name: c.rows for c in combos}}
    if ev.sensor_rows:
        summary["combos"].append({"name": SENSOR, "params": {"depth_topic": names["depth"]},
                                  **summarize_rows(ev.sensor_rows)})
        summary["per_frame"][SENSOR] = ev.sensor_rows
    write_bag_outputs(summary, out_dir, json_path, ev.worst)
    if error is not None:
        raise BagError(f"{bag}: reading stopped after {ev.frames} evaluated frame(s): {error}. "
                       f"Partial results were written.")
    if ev.out is not None and ev.out.stopped:
        raise BagError(f"--out-bag stopped: {ev.out.stopped}. The evaluation itself went on: {ev.frames} frame(s) "
                       f"evaluated, results written.")
    return summary


def _count(values, missing: int) -> dict:
    finite = [v for v in values if np.isfinite(v)]
    return {"finite": len(finite), "nonfinite": len(values) - len(finite), "missing": missing,
            "of": len(values) + missing}


def summarize_rows(rows: list[dict]) -> dict:
    """A combination's summary: frames evaluated and skipped, the mean of each metric over its FINITE values, and
    beside it ``counts[metric]`` = {finite, nonfinite, missing, of}. Frame metrics count frames (missing: a frame
    the combination skipped, or a metric it does not compute); cloud metrics count objects (non-finite: an object
    without points; missing: objects of skipped frames, or of relative depth)."""
    done = [r for r in rows if "skipped" not in r]
    out: dict = {"frames": len(done), "skipped": len(rows) - len(done), "counts": {}}
    for k in FRAME_KEYS:
        values = [r[k] for r in done if k in r]
        out["counts"][k] = _count(values, len(rows) - len(values))
        if out["counts"][k]["finite"]:
            out[k] = float(np.mean([v for v in values if np.isfinite(v)]))
    times = [r["network_ms"] for r in done if "network_ms" in r]
    if times:
        out["network_ms"] = float(np.mean(times))
    missing = sum(r.get("objects_missing", 0) for r in rows)
    objects = [o for r in done for o in r.get("objects", [])]
    for k in CLOUD_KEYS:
        values = [o[k] for o in objects]
        out["counts"][k] = _count(values, missing)
        if out["counts"][k]["finite"]:
            out[k] = float(np.mean([v for v in values if np.isfinite(v)]))
    return out


def _cell(c: dict, k: str) -> str:
    """A summary.md cell: the mean, with (finite/of) when some values are non-finite or missing."""
    n = c.get("counts", {}).get(k)
    if n is None:
        return f"{c[k]:.4f}" if k in c else "-"
    if n["of"] == 0 or n["missing"] == n["of"]:
        return "-"
    mean = f"{c[k]:.4f}" if k in c else "-"
    return mean if n["finite"] == n["of"] else f"{mean} ({n['finite']}/{n['of']})"


def _notes(summary: dict) -> list[str]:
    """summary.md's lines under the table: what was skipped or left out, and why."""
    lines = []
    if summary["error"]:
        lines += ["", f"**Incomplete:** {summary['error']} (after {summary['frames']} frames)"]
    if summary.get("skipped_frames"):
        lines += ["", f"{summary['skipped_frames']} frame(s) skipped:"]
        lines += [f"- {n} x {reason}" for reason, n in sorted(summary["skip_reasons"].items(), key=lambda x: -x[1])]
    if summary.get("corrupt_messages"):
        lines += ["", f"{summary['corrupt_messages']} corrupt message(s) skipped."]
    if summary.get("stamp_jumps"):
        lines += ["", f"The stamps went back in time {summary['stamp_jumps']} time(s) (last: "
                      f"{summary['last_stamp_jump_s']:+.3f} s; a looped or restarted recording): synchronization "
                      f"started over and the frames after each jump are evaluated."]
    for what, n in sorted((summary.get("left_out_messages") or {}).items()):
        lines += ["", f"{n} message(s) on {what} left out: not a type bag eval reads."]
    if (summary.get("out_bag") or {}).get("error"):
        lines += ["", f"**--out-bag stopped:** {summary['out_bag']['error']}"]
    return lines


def _strict_json(x):
    """The summary as strict JSON: non-finite floats become null (their counts say how many failed)."""
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict_json(v) for v in x]
    return x


def write_bag_outputs(summary: dict, out_dir: str | Path | None, json_path: str | Path | None,
                      worst: list[tuple] = ()) -> None:
    """The summary JSON (strict: non-finite values are null), and in ``out_dir`` summary.md, summary.csv,
    per_frame.csv, per_frame.png and worst_frames.png. A disk that refuses them is a BagError naming the place."""
    for where, write in ((json_path, lambda: _write_json(summary, json_path)),
                         (out_dir, lambda: _write_report(summary, Path(out_dir), worst))):
        if where is None:
            continue
        try:
            write()
        except OSError as exc:  # a full disk, a quota, a read-only directory
            raise BagError(f"the results could not all be written to {where}: {exc}") from None


def _write_json(summary: dict, json_path: str | Path) -> None:
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(_strict_json(summary), indent=2, allow_nan=False))


def _write_report(summary: dict, out: Path, worst: list[tuple]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = [*FRAME_KEYS, *CLOUD_KEYS]
    lines = ["| combination | frames | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for c in summary["combos"]:
        frames = f"{c['frames']}" + (f" (+{c['skipped']} skipped)" if c.get("skipped") else "")
        lines.append(f"| {c['name']} | {frames} | " + " | ".join(_cell(c, k) for k in keys) + " |")
    sensor_note = (f"`{SENSOR}`: the bag's RGB-D depth itself, scored the same way against the ground truth."
                   if SENSOR in summary["per_frame"] else
                   "No ground truth in this bag: the sensor's depth is the reference, so it has no row of its own.")
    lines += ["", "Means over finite values; (n/N): n of N frames (objects, for the cloud columns: "
              f"{', '.join(CLOUD_KEYS)}) had one, the others failed or are missing (table below). " + sensor_note]
    failures = [(c["name"], k, n) for c in summary["combos"] for k, n in c.get("counts", {}).items()
                if n["nonfinite"] or 0 < n["missing"] < n["of"]]
    if failures:
        lines += ["", "| combination | metric | non-finite | missing | of |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {k} | {n['nonfinite']} | {n['missing']} | {n['of']} |" for name, k, n in failures]
    lines += _notes(summary)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["combination", "metric", "unit", "mean", "finite", "nonfinite", "missing", "of"])
        for c in summary["combos"]:
            for k, n in c.get("counts", {}).items():
                w.writerow([c["name"], k, "objects" if k in CLOUD_KEYS else "frames", c.get(k, ""), n["finite"],
                            n["nonfinite"], n["missing"], n["of"]])
    with open(out / "per_frame.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["combination", "stamp", *keys, "objects", "objects_nonfinite", "skipped"])
        for name, rows in summary["per_frame"].items():
            for r in rows:
                objs = r.get("objects", [])
                w.writerow([name, r["stamp"], *[r.get(k, "") for k in keys], len(objs),
                            sum(not np.isfinite(o["chamfer_mm"]) for o in objs), r.get("skipped", "")])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for name, rows in summary["per_frame"].items():
        done = [r for r in rows if "skipped" not in r]
        ax[0].plot([r["si_rmse"] for r in done], label=name)
        ax[1].plot([r["coverage"] for r in done], label=name)
    ax[0].set_ylabel("si-RMSE (lower better)")
    ax[1].set_ylabel("coverage")
    ax[1].set_xlabel("frame")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "per_frame.png", dpi=100)
    plt.close(fig)
    if worst:
        import cv2

        from bgprompt_core.evaluation.colormaps import depth_to_color

        rows = []
        for si, stamp, rgb, pred, ref in worst:
            valid = np.isfinite(pred)
            tiles = [rgb, depth_to_color(np.nan_to_num(pred), valid), depth_to_color(np.nan_to_num(ref), valid & np.isfinite(ref))]
            row = np.concatenate([cv2.resize(t, (160, 160 * t.shape[0] // t.shape[1])) for t in tiles], 1)
            cv2.putText(row, f"si-RMSE {si:.3f} @ {stamp}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            rows.append(row)
        if not cv2.imwrite(str(out / "worst_frames.png"), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR)):
            raise OSError(f"OpenCV could not write {out / 'worst_frames.png'}")  # imwrite reports failure by value
