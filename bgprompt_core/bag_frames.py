"""Synchronized frames from ROS 2 bags (mcap, sqlite3), ROS-free: the pure-Python `rosbags` reader, the node's
synchronizer (bgprompt_core.sync) and topic defaults of common RGB-D drivers.

`bag eval` (bgprompt_ros) and training from robot recordings (bgprompt_training) read bags through this one
module, so a bag is cut into frames exactly as the live node would see them.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError
from .sync import Synchronizer

log = logging.getLogger("bgprompt.bag")

TOPICS = {"image": "/camera/color/image_raw", "camera_info": "/camera/color/camera_info",
          "mask": "/camera/color/object_mask", "depth": "/camera/aligned_depth_to_color/image_raw",
          "truth": "/ground_truth/depth"}  # truth: rendered depth, for evaluation only
# common driver layouts tried in order when the default topic is absent
FALLBACKS = {
    "image": ["/camera/camera/color/image_raw", "/camera/image_raw", "/image_raw", "/image"],
    "camera_info": ["/camera/camera/color/camera_info", "/camera/camera_info", "/camera_info"],
    "mask": ["/mask", "/object_mask"],
    "depth": ["/camera/camera/aligned_depth_to_color/image_raw", "/camera/depth/image_rect_raw", "/depth/image_raw",
              "/depth"],
}


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def storage_plugin(name: str):
    from rosbags.rosbag2 import StoragePlugin

    if name not in ("mcap", "sqlite3"):
        raise ConfigError(f"storage must be mcap or sqlite3, got {name!r}")
    return StoragePlugin.MCAP if name == "mcap" else StoragePlugin.SQLITE3


def resolve_topics(reader, wanted: dict[str, str | None]) -> dict[str, str]:
    """{key: topic}: the asked topic, else the default and the common driver layouts, first one present."""
    available = {c.topic for c in reader.connections}
    out = {}
    for key, topic in wanted.items():
        candidates = [topic] if topic else [TOPICS[key], *FALLBACKS[key]]
        found = next((t for t in candidates if t in available), None)
        if found is None:
            raise ConfigError(f"no {key} topic: tried {candidates}; the bag has {sorted(available)}")
        out[key] = found
    return out


@dataclass
class ReadStats:
    corrupt_messages: int = 0


def synced_sets(reader, names: dict[str, str], keys: list[str], sync: str = "exact", slop: float = 0.015,
                stats: ReadStats | None = None, queue_size: int = 30) -> Iterator[dict]:
    """The synchronized message sets ({key: msg}) of an open rosbags ``AnyReader``, in bag order.

    ``names`` maps keys to topics (resolve_topics); ``keys`` are the ones to synchronise. One corrupt message is
    counted in ``stats`` and skipped; a truncated bag raises from the reader (the caller reports how far it got).
    """
    syncer = Synchronizer(keys, sync, slop, queue_size=queue_size)
    by_topic = {names[k]: k for k in keys}
    conns = [c for c in reader.connections if c.topic in by_topic]
    for conn, _, raw in reader.messages(connections=conns):
        try:
            msg = reader.deserialize(raw, conn.msgtype)
        except Exception as exc:  # one corrupt message: counted and skipped, the bag goes on
            if stats is not None:
                stats.corrupt_messages += 1
            log.warning("corrupt %s message skipped: %s", conn.topic, exc)
            continue
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        yield from syncer.add(by_topic[conn.topic], stamp, msg)


def image_count(reader, names: dict[str, str]) -> int:
    """Messages on the image topic (a progress bar's total)."""
    return sum(c.msgcount for c in reader.connections if c.topic == names["image"])


def open_reader(path: str | Path):
    """A rosbags AnyReader over one bag (use as a context manager)."""
    from rosbags.highlevel import AnyReader

    return AnyReader([Path(path)], default_typestore=typestore())
