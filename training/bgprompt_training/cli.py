"""``bgprompt <verb>``: the one command-line entry point of the project.

Each verb lives in a small function below; heavy imports happen inside the verb so that
``bgprompt --help`` is instant.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIPTION = """\
Object depth from one image with a learned background prompt and a frozen depth network
(Baradad et al., "Background Prompting for Improved Object Depth").

Run `bgprompt VERB --help` for the options of each verb."""


def _cmd_models(args: argparse.Namespace) -> int:
    from bgprompt_core.adapters import REGISTRY, resolve_spec

    specs = [resolve_spec(args.model, local_only=True)] if args.model else list(REGISTRY.values())
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=2))
        return 0
    print(f"{'name':24} {'family':15} {'input':>9} {'x':>3} {'output':19} source")
    for s in specs:
        rule = "fixed" if s.fixed_size else ("sq" if s.square else "")
        print(f"{s.name:24} {s.family:15} {s.input_size[0]:>4}x{s.input_size[1]:<4} {s.size_multiple:>3} "
              f"{s.output_kind:19} {s.source} {rule}")
    return 0


def _cmd_prompt_info(args: argparse.Namespace) -> int:
    from bgprompt_core.checkpoint import read_meta

    meta = read_meta(args.checkpoint)
    print(json.dumps(json.loads(meta.to_json()), indent=2))
    return 0


def _cmd_import_prompt(args: argparse.Namespace) -> int:
    from bgprompt_core.adapters import resolve_spec
    from bgprompt_core.checkpoint import import_authors_prompt, save_prompt

    network = resolve_spec(args.network, local_only=True)
    prompt, meta = import_authors_prompt(args.source, network, divisor=args.divisor)
    out = save_prompt(args.out, prompt, meta)
    h, w = meta.prompt.height, meta.prompt.width
    print(f"imported a {h}x{w} Fourier prompt (decay {meta.prompt.decay}) for {network.name} -> {out}")
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from .render.generate import RenderConfig
    from .render.preview import contact_sheet
    from .render.store import render_dataset

    cfg = RenderConfig(kind=args.kind, size=args.size, seed=args.seed, families=tuple(args.families),
                       meshes=args.meshes, mesh_up=args.mesh_up, textures=args.textures,
                       elevation=tuple(args.elevation), roll_jitter=args.roll_jitter, offcenter=args.offcenter,
                       crop=args.crop)
    t0 = time.perf_counter()
    manifest = render_dataset(cfg, args.out, args.count, backend=args.backend, workers=args.workers,
                              shard_size=args.shard_size)
    dt = time.perf_counter() - t0
    print(f"rendered {manifest['count']} {cfg.kind} at {cfg.size}px with {','.join(manifest['backend'])} in "
          f"{dt:.1f} s ({manifest['count'] / dt:.1f}/s) -> {args.out}")
    if manifest["skipped_meshes"]:
        print(f"skipped {len(manifest['skipped_meshes'])} unreadable mesh files: {manifest['skipped_meshes']}")
    if args.preview:
        from .data.rendered import RenderedDataset

        ds = RenderedDataset(args.out)
        path = contact_sheet([ds.raw(i) for i in range(min(args.preview, len(ds)))], Path(args.out) / "preview.png")
        print(f"preview: {path}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import pretrain

    metrics = pretrain(args.config, args.data, args.val, args.out, steps=args.steps, log_dir=args.logdir)
    print(f"saved {args.out}: held-out scenes AbsRel {metrics['abs_rel']:.4f}, delta1 {metrics['delta1']:.4f} "
          f"({metrics['steps']} steps, {metrics['train_seconds']:.0f} s)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgprompt", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = sub.add_parser("models", help="list the depth networks bgprompt knows (registry) and their specs",
                       description="List registry names with input-size rule, normalization and output kind. "
                                   "With MODEL (a name, hub id or local directory) show only that one; "
                                   "nothing is downloaded.")
    p.add_argument("model", nargs="?", help="registry name, hub id (cached) or local model directory")
    p.add_argument("--json", action="store_true", help="print the specs as JSON")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("prompt-info", help="print the metadata of a prompt checkpoint",
                       description="Print the JSON metadata of a .safetensors prompt checkpoint: prompt config, "
                                   "the network it was learned through, Eq. 2 settings, training config, metrics.")
    p.add_argument("checkpoint", help="prompt checkpoint (.safetensors)")
    p.set_defaults(func=_cmd_prompt_info)

    p = sub.add_parser("import-prompt", help="convert an authors' released 1-BG prompt (.pth.tar) to our format",
                       description="Read a single-background prompt released with the paper "
                                   "(single_background_fft_<net>.pth.tar) with torch.load(weights_only=True) and "
                                   "write it as a bgprompt .safetensors checkpoint for the given network. Files "
                                   "holding pickled objects are refused.")
    p.add_argument("source", help="the authors' .pth.tar file")
    p.add_argument("--network", required=True, help="registry name of the network it was trained for (e.g. dpt-large)")
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.add_argument("--divisor", type=float, default=0.2, help="irfft divisor used by the authors' code (0.2)")
    p.set_defaults(func=_cmd_import_prompt)

    from .render.meshes import FAMILIES

    p = sub.add_parser("render", help="render synthetic objects or indoor scenes with exact depth, masks, normals",
                       description="Render a data set: `objects` (one object per image, ABO-like camera on the upper "
                                   "hemisphere, white background, RGBA kept) or `scenes` (closed rooms with tables, "
                                   "objects and clutter; full-image depth). Every sample is reproducible from "
                                   "(seed, index). Output: npz shards + manifest.json (conventions and generator "
                                   "config).")
    p.add_argument("kind", choices=["objects", "scenes"])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--count", type=int, required=True, help="number of samples")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (square)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["auto", "gl", "numpy"], default="auto",
                   help="gl: moderngl on EGL (fast); numpy: pure-numpy ray caster; auto: gl, else numpy")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (one shard each at a time)")
    p.add_argument("--shard-size", type=int, default=64, help="samples per npz shard")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                   help="procedural shape families to draw from")
    p.add_argument("--meshes", help="folder of real meshes (OBJ/GLB/PLY...) used instead of procedural shapes")
    p.add_argument("--mesh-up", choices=["y", "z"], default="y", help="up axis of the mesh files")
    p.add_argument("--textures", help="folder of material images used besides procedural textures")
    p.add_argument("--elevation", nargs=2, type=float, default=[0.0, 75.0], metavar=("MIN", "MAX"),
                   help="camera elevation range in degrees (objects)")
    p.add_argument("--roll-jitter", type=float, default=0.0, help="camera roll std in degrees (objects)")
    p.add_argument("--offcenter", type=float, default=0.0,
                   help="max off-centre shift of the object, fraction of half the image (objects)")
    p.add_argument("--crop", type=float, default=0.0, help="probability of a close view cutting the object (objects)")
    p.add_argument("--preview", type=int, default=0, metavar="N",
                   help="also write preview.png: RGB | depth | normals | mask for the first N samples")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("pretrain", help="train the embedded depth network on rendered scenes (relative disparity)",
                       description="Train a small depth network of a transformers architecture (configs/mini.json: "
                                   "DPT-hybrid) on `bgprompt render scenes` output ONLY, with MiDaS's scale-and-shift-"
                                   "invariant loss, and save it in Hugging Face layout. Reports AbsRel and delta<1.25 "
                                   "after scale-shift alignment on held-out scenes.")
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "mini.json"),
                   help="architecture + training config (default: training/configs/mini.json)")
    p.add_argument("--data", required=True, help="rendered scenes for training")
    p.add_argument("--val", required=True, help="held-out rendered scenes")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--logdir", help="TensorBoard log directory")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("demo", help="run the main job on the embedded default and write a report",
                       description="Run the end-to-end demonstration offline and write its outputs under --out.")
    p.add_argument("--out", default="demo", help="output directory (default: demo/)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bgprompt_core.adapters import ModelLoadError
    from bgprompt_core.checkpoint import CheckpointError
    from bgprompt_core.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except (CheckpointError, ModelLoadError, ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"bgprompt {args.verb}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
