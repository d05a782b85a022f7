"""Live replay and recording (``ros2 bag play/record`` are not installable here): rclpy + rosbags, raw CDR.

play: publishes every message of a bag with its original relative timing (scaled by ``rate``), optionally
looping and waiting for subscribers first; messages are republished as the recorded bytes.
record: subscribes to topics in raw mode and writes the received CDR bytes into a new bag.
Callers keep DDS on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; the CLI sets it when unset).
"""
from __future__ import annotations

import importlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from bgprompt_core.method.config import ConfigError
from bgprompt_core.errors import BgpromptError

log = logging.getLogger("bgprompt.bag")


def _generated_by_rosidl(pkg: str, kind: str, name: str) -> bool:
    """True when ``pkg`` is an installed ROS interface package generating ``name``; decided from the files alone.

    A bag names its message types, and importing a module runs its code: ``this/msg/Zen`` would print the Zen
    of Python, and worse is possible. So nothing is imported unless the package directory holds the module
    rosidl generates for that type (``<pkg>/msg/_<snake_name>.py`` defining ``Metaclass_<Name>``).
    """
    import importlib.util
    import re

    if not (re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", pkg) and kind in ("msg", "srv", "action")
            and re.fullmatch(r"[A-Z][A-Za-z0-9]*", name)):
        return False
    try:
        spec = importlib.util.find_spec(pkg)  # locates the package without running it
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
    for root in spec.submodule_search_locations:
        generated = Path(root) / kind / f"_{snake}.py"
        if generated.is_file() and f"class Metaclass_{name}(" in generated.read_text(errors="replace"):
            return True
    return False


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image, for installed ROS interface packages only."""
    parts = msgtype.split("/")
    if len(parts) != 3 or not _generated_by_rosidl(*parts):
        raise ConfigError(f"{msgtype} is not a message type of an installed ROS interface package; "
                         f"install its package (e.g. ros-jazzy-<package> from pip, or from apt on a robot)")
    pkg, kind, name = parts
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def schedule(stamps_ns: list[int], rate: float, max_gap: float | None) -> list[float]:
    """Wall-clock offsets (s) at which to publish messages stamped ``stamps_ns``: their relative timing divided
    by ``rate``, with every gap between consecutive messages capped at ``max_gap`` s of wall time."""
    out, t = [], 0.0
    for i, stamp in enumerate(stamps_ns):
        if i:
            gap = max(stamp - stamps_ns[i - 1], 0) / 1e9 / rate
            t += gap if max_gap is None else min(gap, max_gap)
        out.append(t)
    return out


class PlayError(BgpromptError, RuntimeError):
    """A bag that cannot be played (to the end): the message says what and how far it got."""


@dataclass
class Playback:
    """What `play` did: messages published, and corrupt ones skipped per topic."""

    published: int
    skipped: dict[str, int]

    def skipped_note(self) -> str:
        return ", ".join(f"{t} x{n}" for t, n in sorted(self.skipped.items()))


def one_type_per_topic(conns) -> None:
    """A ROS topic carries one type, so a bag whose topic has two (two publishers, a merged bag) cannot be played
    as it is: ConfigError naming each such topic and its types, before anything is published."""
    by_topic: dict[str, dict[str, int]] = {}
    for c in conns:
        types = by_topic.setdefault(c.topic, {})
        types[c.msgtype] = types.get(c.msgtype, 0) + c.msgcount
    mixed = {t: types for t, types in by_topic.items() if len(types) > 1}
    if mixed:
        what = "; ".join(f"topic {t} carries {len(types)} types in this bag ("
                         + ", ".join(f"{m} x{n}" for m, n in sorted(types.items())) + ")" for t, types in mixed.items())
        others = sorted(set(by_topic) - set(mixed))
        raise ConfigError(f"{what}: a ROS topic has one type, so nothing was played. Play the other topics with "
                          f"--topics {' '.join(others) if others else '...'}, or split the bag by type")


def play(bag: str | Path, rate: float = 1.0, loop: bool = False, wait_subscribers: int = 0,
         wait_timeout: float = 30.0, topics: list[str] | None = None, ack_timeout: float = 10.0,
         wait_nodes: list[str] | None = None, max_gap: float | None = 1.0) -> Playback:
    """Publish the bag's messages in order with their relative timing.

    Before the first message: refuses a topic with two types (one_type_per_topic); waits until every node in
    ``wait_nodes`` is ready (active if it is a lifecycle node, and matched on the topics it subscribes to; see
    readiness.py), and until each topic has ``wait_subscribers`` subscribers of any kind; both within
    ``wait_timeout`` s, else NotReady. Gaps between consecutive messages are capped at ``max_gap`` s of wall time
    (None: never). A message that does not deserialize (corrupt CDR) is skipped and counted, the rest is played;
    a bag that cannot be opened or read on is a PlayError. Before returning, waits up to ``ack_timeout`` s for
    the subscribers to acknowledge every message.
    """
    import rclpy
    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader

    from bgprompt_core.messages.bag_frames import typestore
    from .readiness import NotReady, wait_for_nodes

    if rate <= 0:
        raise ConfigError(f"rate must be positive, got {rate}")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if not Path(bag).exists():
        raise FileNotFoundError(f"{bag}: no such bag")
    rclpy.init()
    node = rclpy.create_node("bgprompt_bag_play")
    published, skipped = 0, {}
    try:
        try:
            reader = AnyReader([Path(bag)], default_typestore=typestore())
            reader.open()
        except Exception as exc:  # no metadata.yaml, a cut file: rosbags says which
            raise PlayError(f"{bag} cannot be opened as a bag: {type(exc).__name__}: {exc}") from None
        with closing(reader):
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            if not conns:
                raise ConfigError(f"none of the topics {topics} is in {bag}: it holds "
                                  f"{sorted(c.topic for c in reader.connections)}")
            one_type_per_topic(conns)
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            classes = {c.topic: message_class(c.msgtype) for c in conns}
            pubs = {t: (node.create_publisher(cls, t, qos), cls) for t, cls in classes.items()}
            if wait_nodes:
                wait_for_nodes(node, wait_nodes, wait_timeout, publishers={t: p for t, (p, _) in pubs.items()})
            deadline = time.monotonic() + wait_timeout
            while wait_subscribers and min(p.get_subscription_count() for p, _ in pubs.values()) < wait_subscribers:
                if time.monotonic() >= deadline:
                    raise NotReady(f"fewer than {wait_subscribers} subscriber(s) on "
                                   f"{[t for t, (p, _) in pubs.items() if p.get_subscription_count() < wait_subscribers]}"
                                   f" after {wait_timeout:.0f} s")
                rclpy.spin_once(node, timeout_sec=0.05)
            while True:
                start_wall, last_stamp, offset = None, None, 0.0
                messages = reader.messages(connections=conns)
                while True:
                    try:
                        conn, t, raw = next(messages)
                    except StopIteration:
                        break
                    except Exception as exc:  # a cut or corrupt chunk: what was published stays published
                        raise PlayError(f"{bag}: reading stopped after {published} published message(s): "
                                        f"{type(exc).__name__}: {exc}") from None
                    if start_wall is None:
                        start_wall = time.perf_counter()
                    else:
                        offset += schedule([last_stamp, t], rate, max_gap)[1]
                    last_stamp = t
                    delay = offset - (time.perf_counter() - start_wall)
                    if delay > 0:  # pacing the stream to the bag's timing (not waiting for a process)
                        time.sleep(delay)
                    pub, cls = pubs[conn.topic]
                    try:
                        msg = deserialize_message(bytes(raw), cls)
                    except Exception as exc:  # one corrupt message (rclpy raises RMWError): skipped, counted
                        if conn.topic not in skipped:
                            log.warning("bag play: corrupt %s message at %d skipped: %s", conn.topic, t, exc)
                        skipped[conn.topic] = skipped.get(conn.topic, 0) + 1
                        continue
                    pub.publish(msg)
                    published += 1
                    rclpy.spin_once(node, timeout_sec=0)
                if not loop:
                    break
            # exiting before the subscribers acknowledged would drop the last messages (reliable QoS)
            unacked = [topic for topic, (pub, _) in pubs.items()
                       if not pub.wait_for_all_acked(Duration(seconds=ack_timeout))]
            if unacked:
                log.warning("bag play: not every subscriber acknowledged the last messages of %s within %.0f s",
                            unacked, ack_timeout)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return Playback(published, skipped)


@dataclass
class Recording:
    """What `record` wrote: message counts, and whether it got what it was asked for."""

    per_topic: dict[str, int]
    complete: bool
    reason: str
    disk_full: bool = False  # stopped by a full disk (or a refused write); the bag was closed with what it kept

    @property
    def total(self) -> int:
        return sum(self.per_topic.values())

    def summary(self) -> str:
        return ", ".join(f"{t} x{n}" for t, n in sorted(self.per_topic.items()))


def record(out: str | Path, topics: dict[str, str], count: int | None = None, duration: float | None = None,
           storage: str = "mcap", idle_timeout: float | None = None, expect: dict[str, int] | None = None,
           wait_nodes: list[str] | None = None, wait_timeout: float = 60.0,
           on_ready: Callable[[], None] | None = None) -> Recording:
    """Record ``topics`` ({name: msgtype}) into a new bag.

    Goal: ``count`` messages in all and/or ``expect`` ({topic: n}) per topic; reaching it stops the recording
    and makes it complete. ``duration`` s, ``idle_timeout`` s without a message, or SIGINT stop it too; they
    make it complete only when no goal was given. With ``wait_nodes``, the nodes' publishers on the recorded
    topics must have matched our subscriptions (within ``wait_timeout``, else NotReady) before ``on_ready``
    is called; messages that arrive before that are recorded all the same.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from bgprompt_core.messages.bag_frames import typestore
    from .bag_writer import BagWriter, DiskFull
    from .readiness import wait_for_nodes

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; bags are never overwritten")
    expect = dict(expect or {})
    unknown = sorted(set(expect) - set(topics))
    if unknown:
        raise ConfigError(f"expected counts for topics that are not recorded: {unknown}")
    goal = count is not None or bool(expect)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ts = typestore()
    rclpy.init()
    node = rclpy.create_node("bgprompt_bag_record")
    received: deque = deque()
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    subs = {topic: node.create_subscription(message_class(msgtype), topic,
                                            lambda raw, t=topic: received.append((t, time.time_ns(), raw)), qos,
                                            raw=True)
            for topic, msgtype in topics.items()}
    per_topic = dict.fromkeys(topics, 0)

    def reached() -> bool:
        return goal and (count is None or sum(per_topic.values()) >= count) and \
            all(per_topic[t] >= n for t, n in expect.items())

    reason, disk_full = "interrupted", False
    try:
        with BagWriter(out, storage) as writer:
            conns = {t: writer.add_connection(t, m, typestore=ts) for t, m in topics.items()}
            if wait_nodes:
                wait_for_nodes(node, wait_nodes, wait_timeout, subscriptions=subs)
            if on_ready is not None:
                on_ready()
            t0 = last = time.monotonic()
            while True:
                rclpy.spin_once(node, timeout_sec=0.05)
                while received:
                    topic, t, raw = received.popleft()
                    writer.write(conns[topic], t, bytes(raw))
                    per_topic[topic] += 1
                    last = time.monotonic()
                if reached():
                    reason = "recorded what was asked for"
                    break
                if duration is not None and time.monotonic() - t0 >= duration:
                    reason = f"the duration of {duration:g} s passed"
                    break
                if idle_timeout is not None and any(per_topic.values()) and time.monotonic() - last >= idle_timeout:
                    reason = f"nothing arrived for {idle_timeout:g} s"
                    break
    except (KeyboardInterrupt, ExternalShutdownException):  # SIGINT: rclpy's handler shuts the context down
        pass
    except DiskFull as exc:  # the writer closed the bag with what reached the disk
        reason, disk_full = str(exc), True
        per_topic = _kept_per_topic(out, topics)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    complete = not disk_full and (reached() or not goal)
    if not complete and not disk_full:
        wanted = ([f"{count} messages in all"] if count is not None else []) + \
            [f"{n} on {t}" for t, n in sorted(expect.items())]
        reason = f"incomplete: asked for {', '.join(wanted)}; stopped because {reason}"
    return Recording(per_topic, complete, reason, disk_full)


def _kept_per_topic(bag: Path, topics: dict[str, str]) -> dict[str, int]:
    """Messages per topic of a closed bag, from its metadata.yaml (what a full disk let the writer keep); zeros
    when no bag could be started."""
    from rosbags.rosbag2 import Reader

    kept = dict.fromkeys(topics, 0)
    if (bag / "metadata.yaml").is_file():
        with Reader(bag) as reader:
            kept.update({c.topic: c.msgcount for c in reader.connections})
    return kept
