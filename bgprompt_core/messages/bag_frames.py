"""Synchronized frames from ROS 2 bags (mcap, sqlite3), ROS-free: the pure-Python `rosbags` reader, the node's
synchronizer (bgprompt_core.messages.sync) and topic defaults of common RGB-D drivers.

`bag eval` (bgprompt_ros) and training from robot recordings (bgprompt_training) read bags through this one
module, so a bag is cut into frames exactly as the live node would see them:

    with open_reader(bag) as reader:
        names = resolve_topics(reader, {"image": None, "camera_info": None, "mask": None})
        check_types(reader, names)                   # ConfigError before reading: a topic of the wrong type
        for msgs in synced_sets(reader, names, list(names), stats=ReadStats(), msgtypes=MSGTYPES):
            msgs["image"] = decompress_image(msgs["image"])   # CompressedImage colour -> Image-like
            frame = ros_decode.decode_frame(msgs)             # ConversionError: skip this frame

Colour may be sensor_msgs/CompressedImage (jpeg / png); masks and depth are raw Images (MSGTYPES).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from bgprompt_core.method.config import ConfigError
from bgprompt_core.messages.sync import Synchronizer

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


IMAGE, COMPRESSED, INFO = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo"
# the message types each key is decoded from: colour may be compressed (jpeg / png, as image_transport's
# `compressed` publishes it; decompress_image); masks and depth must be raw (lossy jpeg would corrupt labels and
# depth, and compressedDepth is not decoded: republish it raw with image_transport)
MSGTYPES = {"image": (IMAGE, COMPRESSED), "camera_info": (INFO,), "mask": (IMAGE,), "depth": (IMAGE,),
            "truth": (IMAGE,)}


def check_types(reader, names: dict[str, str], msgtypes: dict[str, tuple[str, ...]] | None = None) -> dict[str, int]:
    """Before reading: every key's topic must carry a type the key is decoded from (``MSGTYPES``), else a
    ConfigError naming the topic, its type(s) and what is needed. A topic that also carries other types (two
    publishers, a bag merged from two recordings) is read for its usable type; returns {"topic (type)": messages}
    of the connections left out, for the caller to report."""
    msgtypes = msgtypes or MSGTYPES
    left_out: dict[str, int] = {}
    for key, topic in names.items():
        conns = [c for c in reader.connections if c.topic == topic]
        wanted = msgtypes[key]
        if not any(c.msgtype in wanted for c in conns):
            has = sorted({c.msgtype for c in conns})
            hint = "" if COMPRESSED not in has else (
                f" (a compressed {key} is not decoded: jpeg would corrupt labels and depth, and compressedDepth is "
                f"not supported; republish it raw, e.g. `ros2 run image_transport republish compressed"
                f"{'Depth' if key in ('depth', 'truth') else ''} raw`, and record that)")
            raise ConfigError(f"{key} topic {topic} carries {', '.join(has)}; {key} is read from "
                              f"{' or '.join(wanted)}{hint}")
        for c in conns:
            if c.msgtype not in wanted:
                left_out[f"{topic} ({c.msgtype})"] = left_out.get(f"{topic} ({c.msgtype})", 0) + c.msgcount
    return left_out


@dataclass
class ReadStats:
    corrupt_messages: int = 0
    stamp_jumps: int = 0  # times the stamps went back (a looped or concatenated recording): the sync started over
    last_jump: tuple[int, int] | None = None  # (newest stamp before, first after), ns


def synced_sets(reader, names: dict[str, str], keys: list[str], sync: str = "exact", slop: float = 0.015,
                stats: ReadStats | None = None, queue_size: int = 30,
                msgtypes: dict[str, tuple[str, ...]] | None = None) -> Iterator[dict]:
    """The synchronized message sets ({key: msg}) of an open rosbags ``AnyReader``, in bag order.

    ``names`` maps keys to topics (resolve_topics); ``keys`` are the ones to synchronise. One corrupt message is
    counted in ``stats`` and skipped; a truncated bag raises from the reader (the caller reports how far it got).
    ``msgtypes`` ({key: types}, e.g. ``MSGTYPES`` after ``check_types``) reads only connections of those types;
    None reads every connection of the topics. Colour may then arrive as a CompressedImage: ``decompress_image``.
    """
    syncer = Synchronizer(keys, sync, slop, queue_size=queue_size)
    by_topic = {names[k]: k for k in keys}
    conns = [c for c in reader.connections if c.topic in by_topic
             and (msgtypes is None or c.msgtype in msgtypes[by_topic[c.topic]])]
    for conn, _, raw in reader.messages(connections=conns):
        try:
            msg = reader.deserialize(raw, conn.msgtype)
        except Exception as exc:  # one corrupt message: counted and skipped, the bag goes on
            if stats is not None:
                stats.corrupt_messages += 1
            log.warning("corrupt %s message skipped: %s", conn.topic, exc)
            continue
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        sets = syncer.add(by_topic[conn.topic], stamp, msg)
        if stats is not None and syncer.stats.jumps != stats.stamp_jumps:
            stats.stamp_jumps, stats.last_jump = syncer.stats.jumps, syncer.stats.last_jump
            log.warning("stamps went back %.3f s on %s (a looped or restarted recording): synchronization started "
                        "over", (syncer.stats.last_jump[0] - syncer.stats.last_jump[1]) / 1e9, conn.topic)
        yield from sets


def image_count(reader, names: dict[str, str]) -> int:
    """Messages on the image topic (a progress bar's total)."""
    return sum(c.msgcount for c in reader.connections if c.topic == names["image"])


def open_reader(path: str | Path):
    """A rosbags AnyReader over one bag (use as a context manager)."""
    from rosbags.highlevel import AnyReader

    return AnyReader([Path(path)], default_typestore=typestore())


def _compressed_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, read before decoding (a tiny file can claim 65535x65535).

    OpenCV has no header-only read, and Pillow is not a dependency of the core: a PNG's IHDR and a JPEG's
    start-of-frame marker are a few bytes at fixed places."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:  # no length field
            pos += 1 if marker == 0xFF else 2
            continue
        size = int.from_bytes(data[pos + 2:pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn: precision, height, width
            return int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
        pos += 2 + size
    return None


def decompress_image(msg):
    """A sensor_msgs/CompressedImage (jpeg or png, as image_transport's `compressed` transport publishes colour)
    as an Image-like message (header, height, width, encoding bgr8 or mono8, step, is_bigendian, data) that
    ``ros_decode.decode_frame`` takes; other messages are returned as they are. The size is checked against the
    4096x4096 limit from the file header before anything is decoded. Raises ConversionError with the reason."""
    import cv2
    import numpy as np

    from bgprompt_core.messages.decode import MAX_PIXELS, ConversionError

    if not hasattr(msg, "format"):
        return msg
    fmt = str(msg.format)
    if "compressedDepth" in fmt:
        raise ConversionError(f"compressedDepth ({fmt!r}) is not decoded: republish the depth raw")
    data = bytes(msg.data)
    size = _compressed_size(data)
    if size is None:
        raise ConversionError(f"compressed image ({fmt!r}, {len(data)} bytes) is neither PNG nor JPEG, or its "
                              f"header is cut")
    if 0 in size:
        raise ConversionError(f"compressed image ({fmt!r}, {len(data)} bytes) is corrupt: its header says "
                              f"{size[0]}x{size[1]} pixels")
    if size[0] * size[1] > MAX_PIXELS:
        raise ConversionError(f"compressed image claims {size[0]}x{size[1]} pixels (limit 4096x4096)")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ConversionError(f"compressed image ({fmt!r}, {len(data)} bytes) could not be decoded")
    if arr.dtype != np.uint8:  # 16-bit PNG colour: the node's colour encodings are 8-bit
        arr = (arr // 257).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR)
    encoding = "mono8" if arr.ndim == 2 else "bgr8"
    return SimpleNamespace(header=msg.header, height=arr.shape[0], width=arr.shape[1], encoding=encoding,
                           is_bigendian=0, step=arr.strides[0], data=np.ascontiguousarray(arr).reshape(-1))
