"""Old bgprompt_ros module paths that moved into the ``bags`` package (issue 30).

Importing an old path still works for one release and warns with a ``DeprecationWarning`` naming the new module.
``bag_live`` and ``bag_writer`` moved whole: the old name is bound to the new module object. ``bag`` was split
into bags.make, bags.evaluate and bags.report: the old name is a module whose every old name is looked up in its
new home (each with a warning naming it).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

PACKAGE = "bgprompt_ros"

MOVED = {"bag_live": "bags.live", "bag_writer": "bags.writer"}
"""Old module name (under bgprompt_ros) -> its new home, moved whole."""

_BAG_FRAMES = "bgprompt_core.messages.bag_frames"
SPLIT = {
    "bag": {
        **dict.fromkeys(("FRAME", "_header", "image_message", "camera_info_message", "sensor_depth_m",
                         "iter_render_samples", "make_bag"), "bgprompt_ros.bags.make"),
        **dict.fromkeys(("Combo", "MIN_OBJECT_PIXELS", "truth_objects", "object_cloud_metrics", "_with_objects",
                         "cross_validated_metric_error", "_cloud", "_prepare", "_input_topics", "_OutBag",
                         "_frame_row", "_sensor_row", "_Evaluation", "eval_bag", "log"), "bgprompt_ros.bags.evaluate"),
        **dict.fromkeys(("BagError", "CLOUD_KEYS", "FRAME_KEYS", "SENSOR", "_count", "summarize_rows", "_cell",
                         "_notes", "_strict_json", "write_bag_outputs", "_write_json", "_write_report"),
                        "bgprompt_ros.bags.report"),
        **dict.fromkeys(("BagWriter", "DiskFull"), "bgprompt_ros.bags.writer"),
        # bag.py re-exported these from bgprompt_core
        **dict.fromkeys(("MSGTYPES", "TOPICS", "ReadStats", "check_types", "decompress_image", "image_count",
                         "open_reader", "resolve_topics", "storage_plugin", "synced_sets", "typestore"), _BAG_FRAMES),
    },
}
"""Old module name (under bgprompt_ros) split in several -> {old name: the module that holds it now}."""


def _split_getattr(old: str):
    """The module ``__getattr__`` of a split old module: each old name from its new module, with a warning."""
    homes = SPLIT[old.rpartition(".")[2]]

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved: "
                                 f"{', '.join(sorted(set(homes.values())))})")
        warnings.warn(f"{old}.{name} moved to {homes[name]}.{name}; import it from there", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        pkg, _, leaf = fullname.rpartition(".")
        if pkg != PACKAGE or (leaf not in MOVED and leaf not in SPLIT):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        leaf = spec.name.rpartition(".")[2]
        self._own_spec = None
        if leaf in SPLIT:
            homes = ", ".join(sorted(set(SPLIT[leaf].values())))
            warnings.warn(f"{spec.name} was split into {homes}; import from those", DeprecationWarning, stacklevel=3)
            return types.ModuleType(spec.name, f"Deprecated: {spec.name} was split into {homes}.")
        new = f"{PACKAGE}.{MOVED[leaf]}"
        warnings.warn(f"{spec.name} moved to {new}; import that instead", DeprecationWarning, stacklevel=3)
        module = importlib.import_module(new)
        self._own_spec = module.__spec__  # importlib sets __spec__ to the old name's; put it back
        return module

    def exec_module(self, module):
        if self._own_spec is not None:
            module.__spec__ = self._own_spec
        else:
            module.__getattr__ = _split_getattr(module.__name__)


def install() -> None:
    """Put the finder for the old paths first on ``sys.meta_path``, once: it claims only the old names, and a stale
    old file (an editable install's other checkout, a leftover) must not win over the alias."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
