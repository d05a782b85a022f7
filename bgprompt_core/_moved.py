"""Old flat module paths (``bgprompt_core.estimator``...) that moved into subpackages.

Importing an old path still works for one release: it imports the new module, warns with a
``DeprecationWarning`` naming it, and binds the old name to the same module object.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "alignment": "rgbd.alignment", "backends": "runtime.onnxruntime_backend", "bag_frames": "messages.bag_frames",
    "checkpoint": "method.checkpoint", "cloud_metrics": "evaluation.cloud_metrics", "composite": "method.composite",
    "config": "method.config", "depth_networks": "networks.loading", "depth_noise": "rgbd.noise",
    "depth_transform": "method.depth_transform", "dft": "method.dft", "estimator": "frame.estimator",
    "evaluation": "evaluation.protocol", "export": "runtime.export", "fusion": "rgbd.fusion",
    "masks": "frame.masks", "metrics": "method.metrics", "model": "method.model", "net_spec": "networks.spec",
    "normalization": "networks.normalization", "object_summary": "frame.object_summary",
    "onnx_graph": "runtime.graph_contract", "prompts": "method.prompts", "recenter": "frame.recenter",
    "ros_decode": "messages.decode", "runtime": "runtime.build", "segmentation": "frame.segmentation",
    "sensor_model": "evaluation.sensor_model", "sync": "messages.sync", "tensorrt_backend": "runtime.tensorrt_backend",
    "torch_backend": "runtime.torch_backend", "unet": "method.unet", "upsample": "frame.upsample",
    "visual": "evaluation.colormaps", "weight_folding": "networks.weight_folding",
}
"""Old module name (under bgprompt_core) -> its new home."""

# Old names that are packages now: their __init__ hands out the old module's names (old_name_getattr).
_NOW_PACKAGES = {"evaluation", "runtime"}


def old_name_getattr(package: str, name: str):
    """``bgprompt_core.runtime.build_runtime`` (old flat module) -> the name from its new module, with a warning."""
    new = "bgprompt_core." + MOVED[package.rpartition(".")[2]]
    module = importlib.import_module(new)
    if name.startswith("__") or not hasattr(module, name):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    warnings.warn(f"{package}.{name} moved to {new}.{name}; import it from there", DeprecationWarning, stacklevel=3)
    return getattr(module, name)


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        pkg, _, leaf = fullname.rpartition(".")
        if pkg != "bgprompt_core" or leaf not in MOVED or leaf in _NOW_PACKAGES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = "bgprompt_core." + MOVED[spec.name.rpartition(".")[2]]
        warnings.warn(f"{spec.name} moved to {new}; import that instead", DeprecationWarning, stacklevel=3)
        module = importlib.import_module(new)
        self._own_spec = module.__spec__  # importlib sets __spec__ to the old name's; put it back
        return module

    def exec_module(self, module):
        module.__spec__ = self._own_spec


def install() -> None:
    """Put the finder for the old paths on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
