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
from pathlib import Path

log = logging.getLogger("bgprompt.bag")


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def play(bag: str | Path, rate: float = 1.0, loop: bool = False, wait_subscribers: int = 0,
         wait_timeout: float = 30.0, topics: list[str] | None = None, ack_timeout: float = 10.0) -> int:
    """Publish the bag's messages in order with their relative timing; returns the number published.

    Before returning, waits up to ``ack_timeout`` s for the subscribers to acknowledge every message.
    """
    import rclpy
    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader

    from .bag import typestore

    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    node = rclpy.create_node("bgprompt_bag_play")
    published = 0
    try:
        with AnyReader([Path(bag)], default_typestore=typestore()) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            pubs = {c.topic: (node.create_publisher(message_class(c.msgtype), c.topic, qos), message_class(c.msgtype))
                    for c in conns}
            deadline = time.time() + wait_timeout
            while wait_subscribers and time.time() < deadline and \
                    min(p.get_subscription_count() for p, _ in pubs.values()) < wait_subscribers:
                rclpy.spin_once(node, timeout_sec=0.05)
            while True:
                start_wall, start_bag = None, None
                for conn, t, raw in reader.messages(connections=conns):
                    if start_wall is None:
                        start_wall, start_bag = time.perf_counter(), t
                    delay = (t - start_bag) / 1e9 / rate - (time.perf_counter() - start_wall)
                    if delay > 0:
                        time.sleep(delay)
                    pub, cls = pubs[conn.topic]
                    pub.publish(deserialize_message(bytes(raw), cls))
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
    return published


def record(out: str | Path, topics: dict[str, str], count: int | None = None, duration: float | None = None,
           storage: str = "mcap", idle_timeout: float | None = None) -> int:
    """Record ``topics`` ({name: msgtype}) until ``count`` messages, ``duration`` s, idle time-out or SIGINT."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosbags.rosbag2 import Writer

    from .bag import _storage, typestore

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; bags are never overwritten")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ts = typestore()
    rclpy.init()
    node = rclpy.create_node("bgprompt_bag_record")
    received = []
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    for topic, msgtype in topics.items():
        node.create_subscription(message_class(msgtype), topic,
                                 lambda raw, t=topic: received.append((t, time.time_ns(), raw)), qos, raw=True)
    n = 0
    t0 = last = time.time()
    try:
        with Writer(out, version=9, storage_plugin=_storage(storage)) as writer:
            conns = {t: writer.add_connection(t, m, typestore=ts) for t, m in topics.items()}
            while True:
                rclpy.spin_once(node, timeout_sec=0.05)
                while received:
                    topic, t, raw = received.pop(0)
                    writer.write(conns[topic], t, bytes(raw))
                    n += 1
                    last = time.time()
                if count is not None and n >= count:
                    break
                if duration is not None and time.time() - t0 >= duration:
                    break
                if idle_timeout is not None and n > 0 and time.time() - last >= idle_timeout:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return n
