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

    if rate <= 0:
        raise ConfigError(f"rate must be positive, got {rate}")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if not Path(bag).exists():
        raise FileNotFoundError(f"{bag}: no such bag")
    rclpy.init()
    node = rclpy.create_node("bgprompt_bag_play")
    done = Playback(0, {})
    try:
        reader = _open_for_play(bag)
        with closing(reader):
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            if not conns:
                raise ConfigError(f"none of the topics {topics} is in {bag}: it holds "
                                  f"{sorted(c.topic for c in reader.connections)}")
            one_type_per_topic(conns)
            pubs = _publishers(node, conns)
            _wait_until_ready(node, pubs, wait_nodes, wait_subscribers, wait_timeout)
            while True:
                _play_once(node, bag, reader, conns, pubs, rate, max_gap, done)
                if not loop:
                    break
            _wait_acked(pubs, ack_timeout)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return done


def _open_for_play(bag: str | Path):
    """The bag, opened with rosbags' AnyReader; PlayError naming why when it cannot be."""
    from rosbags.highlevel import AnyReader

    from bgprompt_core.messages.bag_frames import typestore

    try:
        reader = AnyReader([Path(bag)], default_typestore=typestore())
        reader.open()
    except Exception as exc:  # no metadata.yaml, a cut file: rosbags says which
        raise PlayError(f"{bag} cannot be opened as a bag: {type(exc).__name__}: {exc}") from None
    return reader


def _publishers(node, conns) -> dict:
    """{topic: (publisher, message class)} for the played connections (reliable, depth 100)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    classes = {c.topic: message_class(c.msgtype) for c in conns}
    return {t: (node.create_publisher(cls, t, qos), cls) for t, cls in classes.items()}


def _wait_until_ready(node, pubs: dict, wait_nodes: list[str] | None, wait_subscribers: int,
                      wait_timeout: float) -> None:
    """Wait for ``wait_nodes`` (readiness.py), then for ``wait_subscribers`` on every topic; NotReady otherwise."""
    import rclpy

    from ..readiness import NotReady, wait_for_nodes

    if wait_nodes:
        wait_for_nodes(node, wait_nodes, wait_timeout, publishers={t: p for t, (p, _) in pubs.items()})
    deadline = time.monotonic() + wait_timeout
    while wait_subscribers and min(p.get_subscription_count() for p, _ in pubs.values()) < wait_subscribers:
        if time.monotonic() >= deadline:
            raise NotReady(f"fewer than {wait_subscribers} subscriber(s) on "
                           f"{[t for t, (p, _) in pubs.items() if p.get_subscription_count() < wait_subscribers]}"
                           f" after {wait_timeout:.0f} s")
        rclpy.spin_once(node, timeout_sec=0.05)


def _play_once(node, bag: str | Path, reader, conns, pubs: dict, rate: float, max_gap: float | None,
               done: Playback) -> None:
    """One pass over the bag's messages, paced to their stamps; counts into ``done``. A corrupt message is
    skipped and counted; a bag that cannot be read on is a PlayError (what was published stays published)."""
    import rclpy
    from rclpy.serialization import deserialize_message

    start_wall, last_stamp, offset = None, None, 0.0
    messages = reader.messages(connections=conns)
    while True:
        try:
            conn, t, raw = next(messages)
        except StopIteration:
            break
        except Exception as exc:  # a cut or corrupt chunk: what was published stays published
            raise PlayError(f"{bag}: reading stopped after {done.published} published message(s): "
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
            if conn.topic not in done.skipped:
                log.warning("bag play: corrupt %s message at %d skipped: %s", conn.topic, t, exc)
            done.skipped[conn.topic] = done.skipped.get(conn.topic, 0) + 1
            continue
        pub.publish(msg)
        done.published += 1
        rclpy.spin_once(node, timeout_sec=0)


def _wait_acked(pubs: dict, ack_timeout: float) -> None:
    """Exiting before the subscribers acknowledged would drop the last messages (reliable QoS): wait, then warn."""
    from rclpy.duration import Duration

    unacked = [topic for topic, (pub, _) in pubs.items()
               if not pub.wait_for_all_acked(Duration(seconds=ack_timeout))]
    if unacked:
        log.warning("bag play: not every subscriber acknowledged the last messages of %s within %.0f s",
                    unacked, ack_timeout)


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
    from bgprompt_core.messages.bag_frames import typestore
    from .writer import BagWriter, DiskFull
    from ..readiness import wait_for_nodes

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; bags are never overwritten")
    goal = _Goal(count, dict(expect or {}))
    unknown = sorted(set(goal.expect) - set(topics))
    if unknown:
        raise ConfigError(f"expected counts for topics that are not recorded: {unknown}")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ts = typestore()
    rclpy.init()
    node = rclpy.create_node("bgprompt_bag_record")
    received: deque = deque()
    subs = _raw_subscriptions(node, topics, received)
    per_topic = dict.fromkeys(topics, 0)
    reason, disk_full = "interrupted", False
    try:
        with BagWriter(out, storage) as writer:
            conns = {t: writer.add_connection(t, m, typestore=ts) for t, m in topics.items()}
            if wait_nodes:
                wait_for_nodes(node, wait_nodes, wait_timeout, subscriptions=subs)
            if on_ready is not None:
                on_ready()
            reason = _record_until_done(node, writer, conns, received, per_topic, goal, duration, idle_timeout)
    except (KeyboardInterrupt, ExternalShutdownException):  # SIGINT: rclpy's handler shuts the context down
        pass
    except DiskFull as exc:  # the writer closed the bag with what reached the disk
        reason, disk_full = str(exc), True
        per_topic = _kept_per_topic(out, topics)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    complete = not disk_full and (goal.reached(per_topic) or not goal.given)
    if not complete and not disk_full:
        reason = f"incomplete: asked for {', '.join(goal.wanted())}; stopped because {reason}"
    return Recording(per_topic, complete, reason, disk_full)


@dataclass
class _Goal:
    """What a recording was asked for: ``count`` messages in all and/or ``expect`` ({topic: n}) per topic."""

    count: int | None
    expect: dict[str, int]

    @property
    def given(self) -> bool:
        return self.count is not None or bool(self.expect)

    def reached(self, per_topic: dict[str, int]) -> bool:
        return self.given and (self.count is None or sum(per_topic.values()) >= self.count) and \
            all(per_topic[t] >= n for t, n in self.expect.items())

    def wanted(self) -> list[str]:
        return ([f"{self.count} messages in all"] if self.count is not None else []) + \
            [f"{n} on {t}" for t, n in sorted(self.expect.items())]


def _raw_subscriptions(node, topics: dict[str, str], received: deque) -> dict:
    """{topic: raw subscription} appending (topic, receive time ns, CDR bytes) to ``received``."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    return {topic: node.create_subscription(message_class(msgtype), topic,
                                            lambda raw, t=topic: received.append((t, time.time_ns(), raw)), qos,
                                            raw=True)
            for topic, msgtype in topics.items()}


def _record_until_done(node, writer, conns: dict, received: deque, per_topic: dict[str, int], goal: _Goal,
                       duration: float | None, idle_timeout: float | None) -> str:
    """Spin and write what arrives until the goal, the duration or the idle timeout; returns why it stopped."""
    import rclpy

    t0 = last = time.monotonic()
    while True:
        rclpy.spin_once(node, timeout_sec=0.05)
        while received:
            topic, t, raw = received.popleft()
            writer.write(conns[topic], t, bytes(raw))
            per_topic[topic] += 1
            last = time.monotonic()
        if goal.reached(per_topic):
            return "recorded what was asked for"
        if duration is not None and time.monotonic() - t0 >= duration:
            return f"the duration of {duration:g} s passed"
        if idle_timeout is not None and any(per_topic.values()) and time.monotonic() - last >= idle_timeout:
            return f"nothing arrived for {idle_timeout:g} s"


def _kept_per_topic(bag: Path, topics: dict[str, str]) -> dict[str, int]:
    """Messages per topic of a closed bag, from its metadata.yaml (what a full disk let the writer keep); zeros
    when no bag could be started."""
    from rosbags.rosbag2 import Reader

    kept = dict.fromkeys(topics, 0)
    if (bag / "metadata.yaml").is_file():
        with Reader(bag) as reader:
            kept.update({c.topic: c.msgcount for c in reader.connections})
    return kept
