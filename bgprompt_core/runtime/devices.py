"""Which torch device a configured name means, decided in one place (the torch backend, the model's loading)."""
from __future__ import annotations


def torch_device(requested: str) -> str:
    """``auto`` -> ``cuda`` where torch sees a CUDA GPU, else ``cpu``; any other name ("cpu", "cuda:1") as is.

    Imports torch only to answer ``auto``: this module itself needs no torch.
    """
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
