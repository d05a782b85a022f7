"""What several verbs share: the shipped configs' folder, the shared flags (as argparse parents), the
distributed-backend flag and the inference verbs' network and prompt flags."""
from __future__ import annotations

import argparse
from pathlib import Path

from bgprompt_core.settings import PRECISIONS
# configs shipped as package data (setup.py): found in a source checkout, a wheel and a colcon install alike
PACKAGE_CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# flags several verbs share, given to them as argparse parents (one definition each)
SHARED_FLAGS = {
    "seed": lambda p: p.add_argument("--seed", type=int, default=0, help="random seed (default 0)"),
    "device": lambda p: p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1..."),
    "logdir": lambda p: p.add_argument("--logdir", help="TensorBoard log directory"),
    "local-only": lambda p: p.add_argument("--local-only", action="store_true",
                                           help="never touch the network for model files"),
}


def shared(*names: str) -> list[argparse.ArgumentParser]:
    """Parent parsers for the shared flags ``names`` (``sub.add_parser(..., parents=shared("seed"))``)."""
    parents = []
    for name in names:
        parent = argparse.ArgumentParser(add_help=False)
        SHARED_FLAGS[name](parent)
        parents.append(parent)
    return parents


def dist_backend_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dist-backend", choices=["auto", "nccl", "gloo"], default="auto",
                   help="under torchrun (torchrun --nproc_per_node N -m bgprompt_training VERB ...): nccl on GPUs, "
                        "gloo on CPU (auto); the batch is the global batch, split over the N processes "
                        "(docs/DISTRIBUTED.md)")


def runtime_args(p: argparse.ArgumentParser) -> None:
    """The network and prompt flags of the inference verbs (predict, export)."""
    from bgprompt_core.runtime.build import PROMPT_HELP

    p.add_argument("--model", default="mini", help="depth network (default: the embedded `mini`)")
    p.add_argument("--prompt", default="1bg", help=PROMPT_HELP)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--allow-download", action="store_true", help="let transformers fetch hub models")
