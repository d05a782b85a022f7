"""`bgprompt models`, `prompt-info` and `import-prompt`: what the registry and a checkpoint hold."""
from __future__ import annotations

import argparse
import json


def _cmd_models(args: argparse.Namespace) -> int:
    from bgprompt_core.networks.loading import REGISTRY, resolve_spec

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


def register_models(sub) -> None:
    p = sub.add_parser("models", help="list the depth networks bgprompt knows (registry) and their specs",
                       description="List registry names with input-size rule, normalization and output kind. "
                                   "With MODEL (a name, hub id or local directory) show only that one; "
                                   "nothing is downloaded.")
    p.add_argument("model", nargs="?", help="registry name, hub id (cached) or local model directory")
    p.add_argument("--json", action="store_true", help="print the specs as JSON")
    p.set_defaults(func=_cmd_models)


def _cmd_prompt_info(args: argparse.Namespace) -> int:
    from bgprompt_core.method.checkpoint import read_meta

    meta = read_meta(args.checkpoint)
    print(json.dumps(json.loads(meta.to_json()), indent=2))
    return 0


def register_prompt_info(sub) -> None:
    p = sub.add_parser("prompt-info", help="print the metadata of a prompt checkpoint",
                       description="Print the JSON metadata of a .safetensors prompt checkpoint: prompt config, "
                                   "the network it was learned through, Eq. 2 settings, training config, metrics.")
    p.add_argument("checkpoint", help="prompt checkpoint (.safetensors)")
    p.set_defaults(func=_cmd_prompt_info)


def _cmd_import_prompt(args: argparse.Namespace) -> int:
    from bgprompt_core.networks.loading import resolve_spec
    from bgprompt_core.method.checkpoint import import_authors_prompt, save_prompt

    network = resolve_spec(args.network, local_only=True)
    prompt, meta = import_authors_prompt(args.source, network, divisor=args.divisor)
    out = save_prompt(args.out, prompt, meta)
    h, w = meta.prompt.height, meta.prompt.width
    print(f"imported a {h}x{w} Fourier prompt (decay {meta.prompt.decay}) for {network.name} -> {out}")
    return 0


def register_import_prompt(sub) -> None:
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
