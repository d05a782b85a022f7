"""`bgprompt eval`, `results`, `eval-grasp`, `eval-resolution` and `demo`: the measurements and reports."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import shared


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..eval import evaluate, scene_drift, write_outputs

    rows = evaluate(args.model, args.data, prompts=args.prompt or [], backgrounds=args.background,
                    finetuned=args.finetuned or [], count=args.count, eq2_variants=not args.no_eq2_variants,
                    recenter=args.recenter, local_only=args.local_only,
                    figures=Path(args.figures) if args.figures else None, figure_count=args.figure_count)
    table = write_outputs(rows, Path(args.out) if args.out else None, Path(args.json) if args.json else None)
    print(table)
    if args.scenes:
        drift = scene_drift(args.model, args.finetuned or [], args.scenes, args.local_only, "cpu")
        lines = ["", "| network | held-out scenes | AbsRel ↓ | delta<1.25 ↑ |", "|---|---|---|---|"]
        lines += [f"| {r['network']} | {r['scenes']} | {r['abs_rel']:.4f} | {r['delta1']:.4f} |" for r in drift]
        print("\n".join(lines))
        if args.json:
            data = json.loads(Path(args.json).read_text())
            data["scene_quality"] = drift
            Path(args.json).write_text(json.dumps(data, indent=2))
    return 0


def register_eval(sub) -> None:
    p = sub.add_parser("eval", parents=shared("local-only"),
                       help="evaluate backgrounds, finetuned networks and prompts (paper Tables 1-3, S1-S3)",
                       description="Evaluate one network under several conditions on several data sets with the "
                                   "paper's protocol (--count samples drawn with seed 1338; GT masked mean 5): si-RMSE "
                                   "(Eq. 3, lower better), normal cosine (higher better), shape_err (scale-and-shift-"
                                   "aligned disparity RMSE, blind to Eq. 2), skill vs the flat reference, and the "
                                   "fraction of collapsed (flattened) objects. The references `flat` and "
                                   "`oracle-shift` are always included.")
    p.add_argument("--model", required=True, help="the base network (registry name, hub id or directory)")
    p.add_argument("--data", nargs="+", required=True, metavar="SPEC",
                   help="data sets: render directories or FORMAT:PATH (abo, hm3d-abo, hndr, npz, gso)")
    p.add_argument("--prompt", nargs="*", metavar="CKPT", help="prompt checkpoints (1-BG or PNet)")
    p.add_argument("--background", nargs="+", default=["white"], metavar="BG",
                   help="no-prompt conditions: white, original, noise, or a folder of images")
    p.add_argument("--finetuned", nargs="*", metavar="DIR", help="finetuned network directories (baseline)")
    p.add_argument("--count", type=int, default=300, help="samples per data set (paper: 300)")
    p.add_argument("--no-eq2-variants", action="store_true",
                   help="evaluate prompts only with their own Eq. 2 range (default: also the other one)")
    p.add_argument("--recenter", action="store_true", help="re-centre objects by a virtual camera first")
    p.add_argument("--scenes", help="held-out rendered scenes: report scene-quality drift of finetuned networks")
    p.add_argument("--out", help="directory for results.md and results.csv")
    p.add_argument("--json", help="write {'rows': [...]} here")
    p.add_argument("--figures", help="directory for Figure 5/6 style PNGs")
    p.add_argument("--figure-count", type=int, default=4, help="samples per data set in the figures")
    p.set_defaults(func=_cmd_eval)


def _cmd_results(args: argparse.Namespace) -> int:
    from ..results import make_results

    out = make_results(Path(args.out), Path(args.cache), args.count, figures=not args.no_figures)
    print(out.read_text())
    print(f"wrote {out}")
    return 0


def register_results(sub) -> None:
    p = sub.add_parser("results", help="regenerate docs/RESULTS.md for the embedded `mini` network",
                       description="Render the evaluation sets (cached), fetch pybullet's real meshes, evaluate the "
                                   "shipped prompts, finetuned baseline and references, and write the results "
                                   "document with tables, goal checks and figures.")
    p.add_argument("--out", default="docs/RESULTS.md")
    p.add_argument("--cache", default=".cache/results", help="rendered evaluation sets")
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=_cmd_results)


def _cmd_eval_grasp(args: argparse.Namespace) -> int:
    from ..grasp import (DEFAULT_PARAMS, GraspEvalConfig, _Methods, evaluate_grasp, merge_results,
                         read_node_params, write_report)

    params = args.params or str(DEFAULT_PARAMS)
    shipped = read_node_params(params).get("prompt", "1bg")
    prompts = tuple(args.prompt) + (() if shipped in args.prompt else (shipped,))  # the goals' prompt always runs
    cfg = GraspEvalConfig.from_params_file(
        params, model=args.model, prompts=prompts, oracle_prompt=args.oracle_prompt,
        sensors=tuple(args.sensor), count=args.count, min_pixels=args.min_pixels, local_only=args.local_only,
        bootstrap=args.bootstrap, fusion_noise=args.fusion_noise)
    methods = _Methods(cfg)
    results = [evaluate_grasp(d, cfg, keep_clouds=args.figures, methods=methods) for d in args.data]
    path = write_report(merge_results(results, cfg), Path(args.out), cfg, params)
    print(path.read_text())
    print(f"report: {path}")
    return 0


def _cmd_eval_resolution(args: argparse.Namespace) -> int:
    from ..resolution import run_cli

    return run_cli(args)


def register_eval_resolution(sub) -> None:
    p = sub.add_parser("eval-resolution", help="object depth at full resolution: coverage, thin parts, Chamfer",
                       description="Depth for every mask pixel at the frame's resolution (issue 29): the estimator's "
                                   "joint bilateral upsampling against the bilinear one it replaced, on tabletop "
                                   "renders and real-mesh renders, with `mini` and with an oracle network (the "
                                   "ground truth on the network's grid). Renders its frames into --cache when "
                                   "absent; writes a markdown table, a JSON summary and a before / after PNG.")
    p.add_argument("--out", default="docs/RESOLUTION.md", help="markdown report (a .json and .png beside it)")
    p.add_argument("--cache", default=".cache/resolution", help="rendered frames (reused when present)")
    p.add_argument("--model", default="mini", help="depth network")
    p.add_argument("--prompt", default="1bg", help="its prompt")
    p.add_argument("--count", type=int, default=24, help="frames per data set")
    p.add_argument("--sigma-color", type=float, default=100.0, help="joint bilateral colour std (0-255 units)")
    p.add_argument("--wheel", help="a local pybullet wheel for the real meshes (default: pip downloads it)")
    p.set_defaults(func=_cmd_eval_resolution)


def register_eval_grasp(sub) -> None:
    from bgprompt_core.evaluation.sensor_model import PRESETS

    p = sub.add_parser("eval-grasp", help="object clouds in metres from simulated RGB-D sensors, by material",
                       description="On `bgprompt render tabletop` frames (procedural shapes, or real meshes with "
                                   "`render tabletop --meshes`), score each object's cloud against the ground-truth "
                                   "surface in mm (Chamfer, accuracy and completeness within 5/10 mm, centroid, "
                                   "oriented-box extents, parallel-jaw grasp width and centre) for: the raw sensor, "
                                   "cv2.inpaint in mm (Telea, NS), each prompt + fusion with the settings of the "
                                   "params file, the fill before issue 24 (prediction only), and an oracle aligned "
                                   "to the ground truth; for every sensor preset (each frame re-simulated). Writes "
                                   "summary.md (median and mean, no-cloud shares, the goals with bootstrap "
                                   "intervals), results.json and figures.")
    p.add_argument("--data", nargs="+", required=True, help="`bgprompt render tabletop` directories (one set each)")
    p.add_argument("--model", default="mini")
    p.add_argument("--prompt", nargs="+", default=["none", "1bg", "pnet", "tabletop"],
                   help="prompts fused with the sensor: none (white background), 1bg, pnet, tabletop, or paths; the "
                        "params file's prompt (the goals are judged on it) is added when missing")
    p.add_argument("--params", help="the node's params file whose settings are measured (default: the shipped "
                                    "config/object_depth_rgbd.yaml): prompt, align, recenter, fusion_*")
    p.add_argument("--sensor", nargs="+", default=list(PRESETS), choices=["stored", *PRESETS],
                   help=f"sensor presets to evaluate (default: all: {', '.join(PRESETS)}); stored: the render's own")
    p.add_argument("--fusion-noise", choices=["preset", "params"], default="preset",
                   help="the sensor noise fusion assumes: preset (each preset's own, as a node whose fusion_noise_* "
                        "describe its camera) or params (the params file's for every preset: a camera the node's "
                        "parameters do not describe)")
    p.add_argument("--oracle-prompt", help="prompt of the oracle and fill-comparison rows (default: the shipped one)")
    p.add_argument("--count", type=int, help="at most this many frames per data set")
    p.add_argument("--min-pixels", type=int, default=150, help="objects with fewer mask pixels are left out")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of the ratios' 95%% intervals")
    p.add_argument("--figures", type=int, default=3, help="objects per (set, sensor, material) in the cloud figures "
                                                       "(0: none)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--local-only", action="store_true", default=True, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_eval_grasp)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(Path(args.out))


def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on the embedded default and write a report",
                       description="Run the end-to-end demonstration offline and write its outputs under --out.")
    p.add_argument("--out", default="demo", help="output directory (default: demo/)")
    p.set_defaults(func=_cmd_demo)
