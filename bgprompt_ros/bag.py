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

from bgprompt_core.bag_frames import (TOPICS, ReadStats, image_count, open_reader, resolve_topics,  # noqa: F401
                                     storage_plugin, synced_sets, typestore)
from bgprompt_core.config import ConfigError
from bgprompt_core.errors import BgpromptError
from bgprompt_core.estimator import InputError, ObjectDepthEstimator
from bgprompt_core.evaluation import frame_metrics
from bgprompt_core.geometry import backproject_np
from bgprompt_core.sensor_model import to_millimetres

from . import conversions
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

    Tabletop renders carry their sensor's depth (materials included); for other renders the sensor model
    (bgprompt_core.sensor_model) runs here, with dark surfaces (luminance < 0.12) as its only material cue.
    """
    from bgprompt_core import sensor_model as sm

    if sensor == "none":
        return sample["depth"].astype(np.float32)
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
    16UC1 depth in mm (``sensor``: a sensor_model preset or 'none') and, for evaluation only, the ground-truth
    depth (32FC1 metres, NaN where there is no surface). Tabletop renders give 16UC1 instance labels of every
    object as the mask; other renders a mono8 mask."""
    from rosbags.rosbag2 import Writer

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; bags are never overwritten")
    ts = typestore()
    rng = np.random.default_rng(seed)
    start = 1_700_000_000 * 10**9
    count = 0
    with Writer(out, version=9, storage_plugin=storage_plugin(storage)) as writer:
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
            for k, msg in msgs.items():
                writer.write(conns[k], stamp, ts.serialize_cdr(msg, msg.__msgtype__))
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


def cloud_metrics_m(res, truth: np.ndarray, mask: np.ndarray, K: np.ndarray) -> dict:
    """Object clouds in millimetres against the ground truth (bags that carry it), mean over the frame's objects:
    Chamfer, accuracy and completeness within 10 mm, centroid error (bgprompt_core.cloud_metrics)."""
    from bgprompt_core import cloud_metrics as cm

    labelled = mask.dtype not in (np.uint8, np.bool_)  # instance labels, else one binary object (id 1)
    valid = np.isfinite(truth) & (truth > 0)
    per = []
    for oid in res.object_ids:
        obj = ((mask == oid) if labelled else (mask > 0)) & valid
        pts = res.points[res.instance == oid].astype(np.float64)
        if obj.sum() < 16:
            continue
        grid = backproject_np(np.where(obj, truth, np.nan).astype(np.float32), K)[obj]
        e = cm.cloud_errors(pts, cm.surface_samples(truth, obj, K))
        per.append({"chamfer_mm": e["chamfer_mm"], "accuracy_10mm": e["accuracy_10mm"],
                    "completeness_10mm": e["completeness_10mm"], "centroid_mm": cm.centroid_error_mm(pts, grid)})
    return {k: float(np.mean([d[k] for d in per])) for k in CLOUD_KEYS} if per else {}


CLOUD_KEYS = ("chamfer_mm", "accuracy_10mm", "completeness_10mm", "centroid_mm")


def cross_validated_metric_error(rel: np.ndarray, ref: np.ndarray, obj: np.ndarray, mode: str) -> dict:
    """Fit the scale (or scale+shift) on one checkerboard half of the valid pixels, score metres on the other."""
    from bgprompt_core.alignment import fit_to_sensor

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
    writes it), else the sensor itself."""
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
    """The node's outputs for each frame of the first combination, written to an mcap bag."""

    TOPICS = (("depth", "/object_depth/image", "sensor_msgs/msg/Image"),
              ("info", "/object_depth/camera_info", "sensor_msgs/msg/CameraInfo"),
              ("cloud", "/object_points", "sensor_msgs/msg/PointCloud2"))

    def __init__(self, path: Path, ts, cloud_mode: str):
        from rosbags.rosbag2 import Writer

        self.ts, self.cloud_mode = ts, cloud_mode
        self.writer = Writer(Path(path), version=9, storage_plugin=storage_plugin("mcap"))
        self.writer.open()
        self.conns = {k: self.writer.add_connection(n, t, typestore=ts) for k, n, t in self.TOPICS}

    def write(self, stamp: int, matched: dict, res, rgb: np.ndarray, params: dict) -> None:
        header = matched["image"].header
        msgs = {"depth": conversions.depth_image_message(self.ts.types["sensor_msgs/msg/Image"], header, res.depth),
                "info": matched["camera_info"], "cloud": _cloud(self.ts, header, res, rgb, self.cloud_mode, params)}
        for key, msg in msgs.items():
            self.writer.write(self.conns[key], stamp, self.ts.serialize_cdr(msg, msg.__msgtype__))

    def close(self) -> None:
        self.writer.close()


def _frame_row(c: Combo, stamp: int, f, matched: dict, res) -> dict:
    """One combination's metrics for one frame (frame_metrics, metric error, clouds in mm)."""
    ref = f.truth if f.truth is not None else f.sensor
    obj = res.instance > 0 if f.mask is None else (f.mask > 0)
    row = {"stamp": stamp, **frame_metrics(res.depth, ref, obj, f.K), "network_ms": res.timing_ms["network"]}
    if c.relative is not None:
        rel = c.relative.estimate(f.rgb, f.K, f.mask)
        row.update(cross_validated_metric_error(rel.depth, ref, obj, c.params.get("align", "scale")))
    if "truth" in matched and res.units == "metres":
        row.update(cloud_metrics_m(res, ref, res.instance if f.mask is None else f.mask, f.K))
    return row


class _Evaluation:
    """Per-frame work of ``eval_bag``: every combination on a frame, rows, the worst frames, the output bag."""

    def __init__(self, combos: list[Combo], out: _OutBag | None):
        self.combos, self.out = combos, out
        self.frames = self.skipped = 0
        self.worst: list[tuple] = []  # (si_rmse, stamp, rgb, prediction, reference) of the first combination

    def frame(self, matched: dict) -> None:
        head = matched["image"].header.stamp  # the frame's stamp (the set may be older than the last message)
        stamp = head.sec * 10**9 + head.nanosec
        try:
            f = conversions.decode_frame(matched, sensor_key="depth")
        except (conversions.ConversionError, ValueError) as exc:
            self.skipped += 1
            log.warning("frame %d skipped: %s", stamp, exc)
            return
        for ci, c in enumerate(self.combos):
            try:
                res = c.estimator.estimate(f.rgb, f.K, f.mask, f.sensor)
            except InputError as exc:
                c.rows.append({"stamp": stamp, "skipped": str(exc)})
                continue
            row = _frame_row(c, stamp, f, matched, res)
            c.rows.append(row)
            if ci == 0:
                if np.isfinite(row["si_rmse"]):
                    ref = f.truth if f.truth is not None else f.sensor
                    self.worst = sorted(self.worst + [(row["si_rmse"], stamp, f.rgb, res.depth, ref)],
                                        key=lambda x: -x[0])[:6]
                if self.out is not None:
                    self.out.write(stamp, matched, res, f.rgb, c.params)
        self.frames += 1


def eval_bag(bag: str | Path, combos: list[Combo], topics: dict[str, str | None] | None = None,
             segment: bool = False, out_dir: str | Path | None = None, json_path: str | Path | None = None,
             out_bag: str | Path | None = None, sync: str = "exact", slop: float = 0.015,
             progress: bool = True, cloud_mode: str = "dense") -> dict:
    """Run the node's pipeline over a bag for each combination; per-frame metrics against the bag's depth.

    A truncated or corrupt bag ends the reading with a BagError after the partial results are written; one
    corrupt message is counted and skipped."""
    from tqdm import tqdm

    bag = Path(bag)
    if out_bag is not None and Path(out_bag).resolve() == bag.resolve():
        raise ConfigError("--out-bag must not be the input bag: the input is never modified")
    _prepare(combos)
    ts = typestore()
    error, read, out = None, ReadStats(), None
    ev = _Evaluation(combos, None)
    t0 = time.perf_counter()
    try:
        with open_reader(bag) as reader:
            names, keys = _input_topics(reader, topics, segment)
            if out_bag is not None:
                ev.out = out = _OutBag(Path(out_bag), ts, cloud_mode)
            with tqdm(total=image_count(reader, names), unit="frame", desc=f"bag eval {bag.name}",
                      disable=not progress) as bar:
                for matched in synced_sets(reader, names, keys, sync, slop, read):
                    bar.update(1)
                    ev.frame(matched)
    except ConfigError:  # a wrong topic or option: nothing to report partially
        raise
    except Exception as exc:  # truncated / corrupt bag: report how far we got, keep the partial results
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if out is not None:
            out.close()
    elapsed = time.perf_counter() - t0
    summary = {"bag": str(bag), "frames": ev.frames, "skipped_frames": ev.skipped, "corrupt_messages": read.corrupt_messages,
               "seconds": elapsed, "frames_per_second": ev.frames / elapsed if elapsed > 0 else 0.0, "error": error,
               "combos": [{"name": c.name, "params": c.params, **_means(c.rows)} for c in combos],
               "per_frame": {c.name: c.rows for c in combos}}
    write_bag_outputs(summary, out_dir, json_path, ev.worst)
    if error is not None:
        raise BagError(f"{bag}: reading stopped after {ev.frames} evaluated frame(s): {error}. "
                       f"Partial results were written.")
    return summary


def _means(rows: list[dict]) -> dict:
    done = [r for r in rows if "skipped" not in r]
    keys = ("si_rmse", "normal_cos", "abs_rel", "abs_rel_ss", "coverage", "ref_coverage", "metric_rmse_m",
            "metric_absrel", *CLOUD_KEYS, "network_ms")
    out = {"frames": len(done), "skipped": len(rows) - len(done)}
    for k in keys:
        vals = [r[k] for r in done if k in r and np.isfinite(r[k])]
        if vals:
            out[k] = float(np.mean(vals))
    return out


def write_bag_outputs(summary: dict, out_dir: str | Path | None, json_path: str | Path | None,
                      worst: list[tuple] = ()) -> None:
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(summary, indent=2))
    if out_dir is None:
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = ["si_rmse", "normal_cos", "abs_rel", "abs_rel_ss", "coverage", "ref_coverage", "metric_rmse_m",
            "metric_absrel", *CLOUD_KEYS]
    lines = ["| combination | frames | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for c in summary["combos"]:
        lines.append(f"| {c['name']} | {c['frames']} | " + " | ".join(f"{c[k]:.4f}" if k in c else "-" for k in keys) + " |")
    if summary["error"]:
        lines += ["", f"**Incomplete:** {summary['error']} (after {summary['frames']} frames)"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    with open(out / "per_frame.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["combination", "stamp", *keys, "skipped"])
        for name, rows in summary["per_frame"].items():
            for r in rows:
                w.writerow([name, r["stamp"], *[r.get(k, "") for k in keys], r.get("skipped", "")])
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

        from bgprompt_core.visual import depth_to_color

        rows = []
        for si, stamp, rgb, pred, ref in worst:
            valid = np.isfinite(pred)
            tiles = [rgb, depth_to_color(np.nan_to_num(pred), valid), depth_to_color(np.nan_to_num(ref), valid & np.isfinite(ref))]
            row = np.concatenate([cv2.resize(t, (160, 160 * t.shape[0] // t.shape[1])) for t in tiles], 1)
            cv2.putText(row, f"si-RMSE {si:.3f} @ {stamp}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            rows.append(row)
        cv2.imwrite(str(out / "worst_frames.png"), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
