"""``bag eval``'s summary and its files: per-combination means with counts, summary.md/.csv, per_frame.csv/.png,
worst_frames.png and the strict JSON."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from bgprompt_core.errors import BgpromptError


class BagError(BgpromptError, RuntimeError):
    """A bag that could not be read to the end; partial results were written."""


CLOUD_KEYS = ("chamfer_mm", "accuracy_10mm", "completeness_10mm", "centroid_mm")
FRAME_KEYS = ("si_rmse", "normal_cos", "abs_rel", "abs_rel_ss", "coverage", "ref_coverage", "metric_rmse_m",
              "metric_absrel")
SENSOR = "sensor (raw depth)"  # the RGB-D sensor's own depth, scored like a combination (bags with ground truth)


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


KEYS = (*FRAME_KEYS, *CLOUD_KEYS)  # the columns of summary.md and per_frame.csv


def _write_report(summary: dict, out: Path, worst: list[tuple]) -> None:
    """``out``/summary.md, summary.csv, per_frame.csv, per_frame.png and (with ``worst``) worst_frames.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(summary_lines(summary)) + "\n")
    _write_summary_csv(summary, out / "summary.csv")
    _write_per_frame_csv(summary, out / "per_frame.csv")
    _plot_per_frame(summary, out / "per_frame.png")
    if worst:
        _write_worst_frames(worst, out / "worst_frames.png")


def summary_lines(summary: dict) -> list[str]:
    """summary.md: the table of means, what the (n/N) mean, the failures per metric and the notes."""
    keys = list(KEYS)
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
    return lines + _notes(summary)


def _write_summary_csv(summary: dict, path: Path) -> None:
    """One row per combination and metric: its mean and counts."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["combination", "metric", "unit", "mean", "finite", "nonfinite", "missing", "of"])
        for c in summary["combos"]:
            for k, n in c.get("counts", {}).items():
                w.writerow([c["name"], k, "objects" if k in CLOUD_KEYS else "frames", c.get(k, ""), n["finite"],
                            n["nonfinite"], n["missing"], n["of"]])


def _write_per_frame_csv(summary: dict, path: Path) -> None:
    """One row per combination and frame: its metrics, objects, failed objects and skip reason."""
    keys = list(KEYS)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["combination", "stamp", *keys, "objects", "objects_nonfinite", "skipped"])
        for name, rows in summary["per_frame"].items():
            for r in rows:
                objs = r.get("objects", [])
                w.writerow([name, r["stamp"], *[r.get(k, "") for k in keys], len(objs),
                            sum(not np.isfinite(o["chamfer_mm"]) for o in objs), r.get("skipped", "")])


def _plot_per_frame(summary: dict, path: Path) -> None:
    """si-RMSE and coverage per evaluated frame, one line per combination."""
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_worst_frames(worst: list[tuple], path: Path) -> None:
    """One row per worst frame (si_rmse, stamp, rgb, prediction, reference): colour, prediction, reference."""
    import cv2

    from bgprompt_core.evaluation.colormaps import depth_to_color

    rows = []
    for si, stamp, rgb, pred, ref in worst:
        valid = np.isfinite(pred)
        tiles = [rgb, depth_to_color(np.nan_to_num(pred), valid), depth_to_color(np.nan_to_num(ref), valid & np.isfinite(ref))]
        row = np.concatenate([cv2.resize(t, (160, 160 * t.shape[0] // t.shape[1])) for t in tiles], 1)
        cv2.putText(row, f"si-RMSE {si:.3f} @ {stamp}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        rows.append(row)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR)):
        raise OSError(f"OpenCV could not write {path}")  # imwrite reports failure by value
