"""The eval-grasp report: the per-(set, sensor, material, method) summary, the goals with paired-bootstrap
intervals, the markdown tables, summary.md and results.json."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bgprompt_core.evaluation import sensor_model as sm

from .config import SUMMARY, GraspEvalConfig, fused_name
from .figures import chamfer_chart, cloud_figure


def _empty(r: dict) -> bool:
    return not r["points"] >= 3


def summarize(rows: list[dict]) -> list[dict]:
    """Per (set, sensor, material, method): object count, share with no cloud (and with readings yet no cloud),
    median and mean of every SUMMARY metric (means over objects with a cloud)."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["sensor"], r["material"], r["method"]), []).append(r)
    order = lambda k: (k[0], k[1], sm.MATERIALS.index(k[2]), k[3])  # noqa: E731
    for key in sorted(groups, key=order):
        sel = groups[key]
        entry = dict(zip(("set", "sensor", "material", "method"), key), objects=len(sel))
        entry["no_cloud"] = float(np.mean([_empty(r) for r in sel]))
        entry["no_cloud_with_readings"] = float(np.mean([_empty(r) and r.get("coverage", 0) > 0 for r in sel]))
        for m in SUMMARY + ("consistent_kept",):
            vals = np.array([r.get(m, np.nan) for r in sel], float)
            finite = vals[np.isfinite(vals)]
            entry[m] = float(np.median(vals[~np.isnan(vals)])) if (~np.isnan(vals)).any() else np.nan
            entry[f"{m}_mean"] = float(finite.mean()) if len(finite) else np.nan
        entry["consistent_kept_min"] = float(np.nanmin([r.get("consistent_kept", np.nan) for r in sel])) \
            if any(np.isfinite(r.get("consistent_kept", np.nan)) for r in sel) else np.nan
        entry["sensor_only"] = float(np.mean([r.get("scale_from") == "sensor-only" for r in sel])) \
            if "scale_from" in sel[0] else np.nan
        out.append(entry)
    return out


def ratio_interval(a: np.ndarray, b: np.ndarray, n: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """median(a) / median(b) over paired objects and its paired-bootstrap 95% interval."""
    ratio = float(np.median(a) / np.median(b))
    if n <= 0 or len(a) < 2:
        return ratio, np.nan, np.nan
    idx = rng.integers(0, len(a), (n, len(a)))
    boot = np.median(a[idx], 1) / np.median(b[idx], 1)
    lo, hi = np.quantile(boot[np.isfinite(boot)], [0.025, 0.975]) if np.isfinite(boot).any() else (np.nan, np.nan)
    return ratio, float(lo), float(hi)


def _paired(rows: list[dict], set_: str, sensor: str, material: str, a: str, b: str, metric: str):
    """Values of ``metric`` for methods a and b on the same objects (inf, i.e. no cloud, kept: a median is robust
    to it and hiding it would flatter the method)."""
    va = {(r["frame"], r["object"]): r[metric] for r in rows
          if (r["set"], r["sensor"], r["material"], r["method"]) == (set_, sensor, material, a)}
    vb = {(r["frame"], r["object"]): r[metric] for r in rows
          if (r["set"], r["sensor"], r["material"], r["method"]) == (set_, sensor, material, b)}
    keys = sorted(set(va) & set(vb))
    return np.array([va[k] for k in keys], float), np.array([vb[k] for k in keys], float)


def goals(rows: list[dict], cfg: GraspEvalConfig) -> list[dict]:
    """Every goal of issue 24 per (set, sensor), each with its figure, interval, threshold and verdict, judged on
    the shipped prompt's fusion (chosen before the test split was seen: the params file's prompt)."""
    rng = np.random.default_rng(0)
    best = fused_name(cfg.goal_prompt)
    out = []
    combos = sorted({(r["set"], r["sensor"]) for r in rows})
    fused_methods = sorted({r["method"] for r in rows if r["method"].endswith("+ fusion")})

    def add(set_, sensor, material, goal, value, threshold, ok, interval=(np.nan, np.nan), note=""):
        out.append({"set": set_, "sensor": sensor, "material": material, "goal": goal, "value": value,
                    "low": interval[0], "high": interval[1], "threshold": threshold, "met": bool(ok), "note": note})

    for set_, sensor in combos:
        here = [r for r in rows if r["set"] == set_ and r["sensor"] == sensor]
        with_readings = [r for r in here if r["method"] in fused_methods and r.get("coverage", 0) > 0]
        empty = float(np.mean([_empty(r) for r in with_readings])) if with_readings else 0.0
        add(set_, sensor, "all", "objects with sensor readings and no fused cloud (every prompt)", 100 * empty,
            "0%", empty == 0)
        mats = {r["material"] for r in here}
        for material in [m for m in sm.MATERIALS if m in mats]:
            def ratio(a, b, metric="chamfer_mm"):
                va, vb = _paired(here, set_, sensor, material, a, b, metric)
                return ratio_interval(va, vb, cfg.bootstrap, rng) if len(va) else (np.nan, np.nan, np.nan)

            inp = min(("inpaint telea", "inpaint ns"), key=lambda m: np.median(
                _paired(here, set_, sensor, material, m, m, "chamfer_mm")[0] if any(
                    r["method"] == m and r["material"] == material for r in here) else [np.inf]))
            b_rows = [r for r in here if r["method"] == best and r["material"] == material]
            if not b_rows:
                continue
            if material == "diffuse":
                r, lo, hi = ratio(best, "raw sensor")
                add(set_, sensor, material, "Chamfer vs raw sensor", r, "<= 1.0x", r <= 1.0, (lo, hi))
                kept = np.array([x.get("consistent_kept", np.nan) for x in b_rows], float)
                kept = kept[np.isfinite(kept)]
                add(set_, sensor, material, "consistent readings kept (mean; min over objects)",
                    100 * float(kept.mean()) if len(kept) else np.nan, "100%",
                    len(kept) == 0 or kept.min() >= 0.9999, note=f"min {100 * kept.min():.1f}%" if len(kept) else "")
            elif material in ("specular", "dark"):
                r, lo, hi = ratio(best, inp)
                add(set_, sensor, material, f"Chamfer vs the better inpainting ({inp})", r, "<= 0.6x", r <= 0.6, (lo, hi))
                r, lo, hi = ratio(best, inp, "centroid_mm")
                add(set_, sensor, material, f"centroid error vs {inp}", r, "<= 0.3x", r <= 0.3, (lo, hi))
                c = float(np.median([x["completeness_10mm"] for x in b_rows]))
                add(set_, sensor, material, "completeness within 10 mm (median)", c, ">= 90%", c >= 90)
            else:
                r, lo, hi = ratio(best, inp)
                add(set_, sensor, material, f"Chamfer vs the better inpainting ({inp})", r, "<= 0.5x", r <= 0.5, (lo, hi))
                a = np.array([x["accuracy_10mm"] for x in b_rows], float)
                acc = float(np.median(np.nan_to_num(a, nan=0.0)))
                add(set_, sensor, material, "fused points within 10 mm of the surface (median)", acc, ">= 50%", acc >= 50)
            if material != "diffuse" and any(r["method"] == "white + fusion" for r in here):
                r, lo, hi = ratio(best, "white + fusion")
                add(set_, sensor, material, "the prompt matters: Chamfer vs white + fusion", r, "<= 0.8x (>= 20% better)",
                    r <= 0.8, (lo, hi))
    return out


def _fmt(v: float, digits: int = 1) -> str:
    return "inf" if v == np.inf else ("nan" if not np.isfinite(v) else f"{v:.{digits}f}")


def markdown(summary: list[dict], set_: str, sensor: str) -> str:
    head = ["material", "method", "objects", "no cloud %", "Chamfer mm (median / mean)", "acc@10mm %",
            "compl@10mm %", "compl@5mm %", "centroid mm (median / mean)", "box extent mm", "grasp width mm",
            "grasp centre mm", "sensor-only %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in summary:
        if (e["set"], e["sensor"]) != (set_, sensor):
            continue
        vals = [e["material"], e["method"], str(e["objects"]), _fmt(100 * e["no_cloud"], 0),
                f"{_fmt(e['chamfer_mm'])} / {_fmt(e['chamfer_mm_mean'])}", _fmt(e["accuracy_10mm"]),
                _fmt(e["completeness_10mm"]), _fmt(e["completeness_5mm"]),
                f"{_fmt(e['centroid_mm'])} / {_fmt(e['centroid_mm_mean'])}", _fmt(e["box_extent_mm"]),
                _fmt(e["grasp_width_mm"]), _fmt(e["grasp_centre_mm"]),
                _fmt(100 * e["sensor_only"], 0) if np.isfinite(e["sensor_only"]) else ""]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def goal_lines(goal_rows: list[dict], set_: str, sensor: str) -> list[str]:
    lines = []
    for g in goal_rows:
        if (g["set"], g["sensor"]) != (set_, sensor):
            continue
        pct = not g["threshold"].rstrip(")").endswith("x") and "x " not in g["threshold"]
        val = f"{_fmt(g['value'])}%" if pct else f"{_fmt(g['value'], 2)}x"
        ci = f" [95% CI {_fmt(g['low'], 2)}, {_fmt(g['high'], 2)}]" if np.isfinite(g["low"]) else ""
        note = f" ({g['note']})" if g["note"] else ""
        lines.append(f"- {g['material']}: {g['goal']}: {val}{ci}{note} (goal {g['threshold']}): "
                     f"{'met' if g['met'] else '**NOT met**'}")
    return lines


def write_report(result: dict, out: Path, cfg: GraspEvalConfig, params_file: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    summary, goal_rows = result["summary"], result["goals"]
    shipped = fused_name(cfg.goal_prompt)
    figs = []
    for key, clouds in result["clouds"].items():
        if "harsh-stereo" not in key and any("harsh-stereo" in k for k in result["clouds"]):
            continue  # side views for the harshest preset only (the tables cover every preset)
        methods = ["raw sensor", "inpaint ns", shipped]
        f = cloud_figure(clouds, methods, out / f"clouds_{key.replace(' / ', '_').replace(' ', '-')}.png",
                         f"{key}: side views (mm), GT in grey")
        if f is not None:
            figs.append(f)
    chart_methods = ["raw sensor", "inpaint ns", "inpaint telea", "white + fusion", shipped]
    figs.append(chamfer_chart(summary, [m for m in chart_methods if any(e["method"] == m for e in summary)],
                              out / "chamfer_by_method.png"))
    frames = ", ".join(f"{n} frames of {s}" for s, n in result["frames"].items())
    met = sum(g["met"] for g in goal_rows)
    lines = ["# Object clouds in metres from simulated RGB-D sensors", "",
             f"{frames}; every sensor preset of `bgprompt_core.evaluation.sensor_model` ({', '.join(cfg.sensors)}); whole "
             f"objects only. Fusion runs with the settings of `{params_file or 'the config given'}` (align "
             f"`{cfg.align}`, recenter `{cfg.recenter}`, hole fill `{cfg.fusion.hole_fill}`), its noise terms "
             + ("set to each preset's" if cfg.fusion_noise == "preset" else
                "the params file's for every preset (`--fusion-noise params`: a camera the parameters do not "
                "describe)")
             + f"; the goals are judged on the shipped prompt's row (**{shipped}**).", "",
             "Chamfer: mean of both directions' mean nearest-neighbour distances to the GT surface (sampled on a 2x "
             "finer grid), median / mean over objects (an object with no cloud counts as inf in the median and is "
             "left out of the mean: its share is the no-cloud column); acc: % of the cloud's points within 10 mm "
             "of the GT surface; compl: % of GT surface within 5 / 10 mm of the cloud; grasp: parallel-jaw grasp "
             "across the thinnest horizontal axis; sensor-only: objects whose prediction failed the plausibility "
             "test (fused from their own readings). Inpainting in whole millimetres (`fusion.inpaint_mm`). Ratios: "
             "of medians over the same objects, with paired-bootstrap 95% intervals.", "",
             f"## Goals ({met} of {len(goal_rows)} met)", ""]
    combos = sorted({(e["set"], e["sensor"]) for e in summary})
    for set_, sensor in combos:
        lines += [f"### {set_}, {sensor}", "", *goal_lines(goal_rows, set_, sensor), ""]
    lines += ["## Tables", ""]
    for set_, sensor in combos:
        lines += [f"### {set_}, {sensor}", "", markdown(summary, set_, sensor), ""]
    lines += ["## Figures", "", *[f"![{f.name}]({f.name})" for f in figs], ""]
    (out / "summary.md").write_text("\n".join(lines))
    write_results_json({k: v for k, v in result.items() if k != "clouds"}, out / "results.json")
    return out / "summary.md"


def write_results_json(result: dict, path: Path) -> None:
    """results.json: measured values to 4 decimals, one row per line (tens of thousands of rows stay a few MB);
    the config exactly as run (a rounded noise term would not reproduce the figures)."""
    clean = {k: _clean(v, None if k == "config" else 4) for k, v in result.items()}
    rows = clean.pop("rows", [])
    head = json.dumps(clean, indent=1, default=_json_default)[:-2]  # without the closing brace
    body = ",\n".join(json.dumps(r, default=_json_default) for r in rows)
    path.write_text(f"{head},\n \"rows\": [\n{body}\n]\n}}\n")


def _clean(v, digits: int | None = 4):
    """JSON without NaN / Infinity (not JSON): None; numpy scalars as Python ones, rounded to ``digits``."""
    if isinstance(v, dict):
        return {str(k): _clean(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x, digits) for x in v]
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            return None
        return float(v) if digits is None else round(float(v), digits)
    return v


def _json_default(v):
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, tuple):
        return list(v)
    return str(v)
