"""``bgprompt <verb>``: the one command-line entry point of the project (``bgprompt_training.cli:main``).

Each verb is a ``register_*`` function (its flags) and a ``_cmd_*`` function (its work) in the module of its
group: info.py (models, prompt-info, import-prompt), datasets.py (render, assets), training.py (pretrain, train),
evaluation.py (eval, results, eval-grasp, eval-resolution, demo), inference.py (predict, export); common.py holds
the flags they share. Heavy imports happen inside the verb so that ``bgprompt --help`` is instant.
"""
from __future__ import annotations

import argparse
import sys

from .common import PACKAGE_CONFIGS, SHARED_FLAGS, dist_backend_arg, runtime_args, shared
from .datasets import register_assets, register_render
from .evaluation import (register_demo, register_eval, register_eval_grasp, register_eval_resolution,
                         register_results)
from .inference import register_export, register_predict
from .info import register_import_prompt, register_models, register_prompt_info
from .training import register_pretrain, register_train

__all__ = ["DESCRIPTION", "PACKAGE_CONFIGS", "SHARED_FLAGS", "VERBS", "build_parser", "dist_backend_arg", "main",
           "runtime_args", "shared"]

DESCRIPTION = """\
Object depth from one image with a learned background prompt and a frozen depth network
(Baradad et al., "Background Prompting for Improved Object Depth").

Run `bgprompt VERB --help` for the options of each verb."""

VERBS = (
    register_models,
    register_prompt_info,
    register_import_prompt,
    register_render,
    register_pretrain,
    register_train,
    register_eval,
    register_predict,
    register_export,
    register_assets,
    register_results,
    register_eval_grasp,
    register_eval_resolution,
    register_demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgprompt", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for register in VERBS:
        register(sub)
    from importlib.metadata import entry_points

    for ep in entry_points(group="bgprompt.verbs"):  # verbs of other layers register themselves too (`bag`)
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bgprompt_core.errors import BgpromptError

    try:
        return int(args.func(args) or 0)
    except (BgpromptError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        # the project's own errors (and missing / clashing files) say what to do; anything else is a bug and
        # keeps its traceback
        print(f"bgprompt {args.verb}: error: {exc}", file=sys.stderr)
        return 2
