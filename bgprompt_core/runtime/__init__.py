"""Inference backends (torch, onnxruntime, TensorRT), the exported graph's contract and its export."""


def __getattr__(name: str):
    """Names of the old flat module ``bgprompt_core.runtime`` (deprecated: import from its new home)."""
    from .._moved import old_name_getattr

    return old_name_getattr(__name__, name)
