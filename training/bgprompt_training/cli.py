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
