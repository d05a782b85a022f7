"""Old flat module paths (``bgprompt_core.estimator``...) that moved into subpackages.

Importing an old path still works for one release: it imports the new module, warns with a
``DeprecationWarning`` naming it, and binds the old name to the same module object.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
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


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook for a package's old module paths: ``moved`` (old leaf -> new dotted path under the package),
    bound to the new module object; ``split`` (old leaf -> {name: module holding it now}), a stand-in module whose
    every old name is fetched from its new home. Each use warns with a DeprecationWarning naming the new place."""

    def __init__(self, package: str, moved: dict[str, str], split: dict[str, dict[str, str]] | None = None,
                 skip: frozenset[str] = frozenset()):
        self.package, self.moved, self.split, self.skip = package, moved, split or {}, skip
        self._own_spec = None

    def find_spec(self, fullname, path=None, target=None):
        pkg, _, leaf = fullname.rpartition(".")
        if pkg != self.package or leaf in self.skip or (leaf not in self.moved and leaf not in self.split):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        leaf = spec.name.rpartition(".")[2]
        self._own_spec = None
        if leaf in self.split:
            homes = ", ".join(sorted(set(self.split[leaf].values())))
            warnings.warn(f"{spec.name} was split into {homes}; import from those", DeprecationWarning, stacklevel=3)
            return types.ModuleType(spec.name, f"Deprecated: {spec.name} was split into {homes}.")
        new = f"{self.package}.{self.moved[leaf]}"
        warnings.warn(f"{spec.name} moved to {new}; import that instead", DeprecationWarning, stacklevel=3)
        module = importlib.import_module(new)
        self._own_spec = module.__spec__  # importlib sets __spec__ to the old name's; put it back
        return module

    def exec_module(self, module):
        if self._own_spec is not None:
            module.__spec__ = self._own_spec
        else:
            module.__getattr__ = _split_getattr(module.__name__, self.split[module.__name__.rpartition(".")[2]])


def _split_getattr(old: str, homes: dict[str, str]):
    """The module ``__getattr__`` of a split old module: each old name from its new module, with a warning."""

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved: "
                                 f"{', '.join(sorted(set(homes.values())))})")
        warnings.warn(f"{old}.{name} moved to {homes[name]}.{name}; import it from there", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__


def install_finder(finder: MovedModules) -> None:
    """Put ``finder`` first on ``sys.meta_path``, once per package: it claims only the old names, and a stale old
    file (an editable install's other checkout, a leftover) must not win over the alias."""
    if not any(isinstance(f, MovedModules) and f.package == finder.package for f in sys.meta_path):
        sys.meta_path.insert(0, finder)


def install() -> None:
    """The finder for bgprompt_core's old flat paths, once."""
    install_finder(MovedModules("bgprompt_core", MOVED, skip=frozenset(_NOW_PACKAGES)))
