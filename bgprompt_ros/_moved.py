"""Old bgprompt_ros module paths that moved into the ``bags`` package (issue 30).

Importing an old path still works for one release and warns with a ``DeprecationWarning`` naming the new module.
``bag_live`` and ``bag_writer`` moved whole: the old name is bound to the new module object. ``bag`` was split
into bags.make, bags.evaluate and bags.report: the old name is a module whose every old name is looked up in its
new home (each with a warning naming it).
"""
from __future__ import annotations

from bgprompt_core._moved import MovedModules, install_finder

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


def install() -> None:
    """The finder for bgprompt_ros's old paths, once (bgprompt_core's MovedModules)."""
    install_finder(MovedModules(PACKAGE, MOVED, SPLIT))
