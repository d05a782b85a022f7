"""Readiness signals (bgprompt_ros.readiness) and the bag tools' use of them, against real processes."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from bgprompt_ros.readiness import NotReady, node_not_ready, wait_for_nodes  # noqa: E402
from full_disk import KINDS, full_disk  # noqa: E402
from proc_lines import wait_for_line  # noqa: E402

BIN = Path(sys.executable).parent
REL = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _env(tmp_path):
    return {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOG_DIR": str(tmp_path / "log")}


def _change(node, transition_id: int, timeout: float = 60.0) -> bool:
    client = node.create_client(ChangeState, "/object_depth/change_state")
    assert client.wait_for_service(timeout_sec=timeout)
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    node.destroy_client(client)
    return future.done() and future.result().success


def test_a_managed_node_is_ready_only_when_active_and_matched(tiny_model_dir, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(f"/**:\n  ros__parameters:\n    model: {tiny_model_dir}\n    prompt: none\n"
                      f"    autostart: false\n    sub_reliability: reliable\n")
    proc = subprocess.Popen([str(BIN / "object_depth_node"), "--ros-args", "--params-file", str(params)],
                            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node("bgprompt_readiness_probe")
    try:
        pubs = {"image": node.create_publisher(Image, "image", REL),
                "camera_info": node.create_publisher(CameraInfo, "camera_info", REL)}
        # a bystander subscribes to the input: a subscriber count would call this ready
        node.create_subscription(Image, "image", lambda m: None, REL)
        deadline = time.monotonic() + 120  # the process may take a while to start on a busy machine
        while node_not_ready(node, "object_depth", pubs) == "not in the ROS graph" and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        reasons = []
        with pytest.raises(NotReady, match=r"'object_depth' was not ready after 1 s: lifecycle state is 'unconfigured'"):
            wait_for_nodes(node, ["object_depth"], 1, publishers=pubs, on_wait=lambda name, why: reasons.append(why))
        assert reasons[-1] == "lifecycle state is 'unconfigured', not 'active'"
        assert pubs["image"].get_subscription_count() >= 1  # the bystander
        assert _change(node, Transition.TRANSITION_CONFIGURE)
        assert node_not_ready(node, "object_depth", pubs) == "lifecycle state is 'inactive', not 'active'"
        assert _change(node, Transition.TRANSITION_ACTIVATE)
        wait_for_nodes(node, ["/object_depth"], 60, publishers=pubs)  # fully qualified names work too
        assert node_not_ready(node, "object_depth", pubs) is None
        assert node_not_ready(node, "no_such_node", pubs) == "not in the ROS graph"
        # a topic the node does not subscribe to is named in the reason
        other = {"elsewhere": node.create_publisher(Image, "elsewhere", REL)}
        assert "subscribes to none of ['/elsewhere']" in node_not_ready(node, "object_depth", other)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        proc.send_signal(2)
        proc.wait(timeout=30)


def test_play_waiting_for_a_missing_node_fails_with_its_name_and_publishes_nothing(tmp_path):
    from bgprompt_core.messages.bag_frames import typestore
    from rosbags.rosbag2 import Writer

    ts = typestore()
    with Writer(tmp_path / "b", version=9) as w:
        c = w.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        w.write(c, 1, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    out = subprocess.run([str(BIN / "bgprompt"), "bag", "play", str(tmp_path / "b"), "--wait-node", "ghost_node",
                          "--wait-timeout", "2"], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "node 'ghost_node' was not ready after 2 s: not in the ROS graph" in out.stderr
    assert "published" not in out.stdout


def test_record_reports_a_shortfall_with_a_nonzero_exit_and_keeps_the_bag(tmp_path):
    out = subprocess.run([str(BIN / "bgprompt"), "bag", "record", "--out", str(tmp_path / "r"),
                          "--topics", "/nobody:sensor_msgs/msg/Image", "/quiet:sensor_msgs/msg/CameraInfo",
                          "--expect", "/nobody=3", "--duration", "1"],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines()[0] == "bag record: ready"
    assert "recorded 0 messages" in out.stdout and "/nobody x0" in out.stdout and "/quiet x0" in out.stdout
    assert "incomplete: asked for 3 on /nobody; stopped because the duration of 1 s passed" in out.stderr
    from rosbags.highlevel import AnyReader

    with AnyReader([tmp_path / "r"]) as reader:  # the partial bag is complete and readable
        assert {c.topic: c.msgcount for c in reader.connections} == {"/nobody": 0, "/quiet": 0}


def test_record_without_a_goal_succeeds_at_its_duration(tmp_path):
    out = subprocess.run([str(BIN / "bgprompt"), "bag", "record", "--out", str(tmp_path / "r"),
                          "--topics", "/nobody:sensor_msgs/msg/Image", "--duration", "0.5"],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def _bag_with(tmp_path, msgtype: str, topic: str = "/x", stamps=(1,)):
    from bgprompt_core.messages.bag_frames import typestore
    from rosbags.rosbag2 import Writer

    from rosbags.typesys import get_types_from_msg

    ts = typestore()
    if msgtype not in ts.types:  # a hostile bag: a type named after any importable module
        ts.register(get_types_from_msg("string data", msgtype))
    with Writer(tmp_path / "b", version=9) as w:
        c = w.add_connection(topic, msgtype, typestore=ts)
        for t in stamps:
            w.write(c, t, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    return tmp_path / "b"


def test_play_never_imports_a_module_a_bag_names(tmp_path, capsys):
    from bgprompt_ros.bags.live import message_class

    bag = _bag_with(tmp_path, "this/msg/Zen")
    out = subprocess.run([str(BIN / "bgprompt"), "bag", "play", str(bag)], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "Beautiful is better" not in out.stdout + out.stderr
    assert "this/msg/Zen is not a message type of an installed ROS interface package" in out.stderr
    with pytest.raises(ValueError, match="not a message type"):
        message_class("os/msg/path")
    assert message_class("sensor_msgs/msg/Image").__name__ == "Image"


def test_play_with_a_topic_filter_that_matches_nothing_says_so(tmp_path):
    bag = _bag_with(tmp_path, "std_msgs/msg/String", "/chatter")
    out = subprocess.run([str(BIN / "bgprompt"), "bag", "play", str(bag), "--topics", "/nothing"],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "none of the topics ['/nothing']" in out.stderr and "/chatter" in out.stderr
    assert "Traceback" not in out.stderr


def test_play_caps_long_gaps_between_messages(tmp_path):
    from bgprompt_ros.bags.live import schedule

    # an hour-long gap in the stamps is played as max_gap seconds, the rest keeps its timing (at rate 2)
    assert schedule([0, 10**9, 3600 * 10**9 + 10**9], rate=2.0, max_gap=1.0) == pytest.approx([0.0, 0.5, 1.5])
    assert schedule([5, 5 + 2 * 10**9], rate=1.0, max_gap=None) == pytest.approx([0.0, 2.0])


@pytest.mark.parametrize("kind", KINDS)
def test_record_on_a_full_disk_stops_clearly_and_keeps_a_closed_readable_bag(tmp_path, kind):
    """A full disk (a small tmpfs) or a refused write (a file size limit) stops `bag record` with exit 3 and the
    reason; the bag holds the messages it reports, closed (metadata.yaml) and readable, in order."""
    import numpy as np
    from rosbags.highlevel import AnyReader

    from bgprompt_core.messages.bag_frames import typestore

    with full_disk(kind, tmp_path, 7 << 20 if kind == "tmpfs" else 5 << 20) as (disk, preexec):
        rec = subprocess.Popen([str(BIN / "bgprompt"), "bag", "record", "--out", str(disk / "r"), "--duration", "120",
                                "--topics", "/h26_full:sensor_msgs/msg/Image"], env=_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
        rclpy.init()
        node = rclpy.create_node("bgprompt_full_disk_probe")
        try:
            wait_for_line(rec.stdout, "bag record: ready")
            pub = node.create_publisher(Image, "/h26_full", REL)
            deadline = time.monotonic() + 120
            while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)  # the recorder's subscription matched ours: a signal
            img = Image(height=128, width=128, encoding="rgb8", step=384)
            img.data = np.random.default_rng(0).integers(0, 255, 128 * 128 * 3, dtype=np.uint8).tobytes()
            sent = 0
            while rec.poll() is None and time.monotonic() < deadline:  # ~50 kB each until the disk is full
                img.header.stamp.sec, img.header.stamp.nanosec = 1000 + sent, 0
                pub.publish(img)
                sent += 1
                rclpy.spin_once(node, timeout_sec=0.01)
            out, err = rec.communicate(timeout=60)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
            if rec.poll() is None:
                rec.kill()
        assert rec.returncode == 3 and "Traceback" not in err, err[-3000:]
        assert "bag record: stopped: " in err and "is readable" in err, err
        n = int(out.split("recorded ")[1].split()[0])
        assert (disk / "r" / "metadata.yaml").is_file() and 0 < n < sent
        with AnyReader([disk / "r"], default_typestore=typestore()) as reader:
            stamps = [reader.deserialize(raw, c.msgtype).header.stamp.sec for c, _, raw in reader.messages()]
        assert len(stamps) == n and stamps == sorted(stamps)


def _write_bag(path, messages):
    """A bag of [(topic, msgtype, stamp, cdr bytes)]; connections in order of first use."""
    from rosbags.rosbag2 import Writer

    from bgprompt_core.messages.bag_frames import typestore

    ts = typestore()
    with Writer(path, version=9) as w:
        conns = {}
        for topic, msgtype, t, raw in messages:
            if (topic, msgtype) not in conns:
                conns[topic, msgtype] = w.add_connection(topic, msgtype, typestore=ts)
            w.write(conns[topic, msgtype], t, raw)
    return path


def _string_cdr(text):
    from bgprompt_core.messages.bag_frames import typestore

    ts = typestore()
    return ts.serialize_cdr(ts.types["std_msgs/msg/String"](data=text), "std_msgs/msg/String")


def test_play_skips_a_corrupt_message_says_so_and_publishes_the_rest(tmp_path):
    from std_msgs.msg import String

    raws = [_string_cdr(f"m{i}") for i in range(5)]
    raws[2] = raws[2][:9]  # its length field says 3 bytes, 1 follows: the CDR cannot be deserialized
    bag = _write_bag(tmp_path / "b", [("/h26_chatter", "std_msgs/msg/String", 10 + i, raw)
                                      for i, raw in enumerate(raws)])
    rclpy.init()
    node = rclpy.create_node("bgprompt_corrupt_probe")
    got = []
    node.create_subscription(String, "/h26_chatter", lambda m: got.append(m.data), REL)
    try:
        play = subprocess.Popen([str(BIN / "bgprompt"), "bag", "play", str(bag), "--wait-subscribers", "1",
                                 "--wait-timeout", "120"], env=_env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (play.poll() is None or len(got) < 4):
            rclpy.spin_once(node, timeout_sec=0.05)
        out, err = play.communicate(timeout=60)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    assert play.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert "published 4 messages" in out and "skipped 1 corrupt message(s): /h26_chatter x1" in err, (out, err)
    assert got == ["m0", "m1", "m3", "m4"]


def test_play_refuses_a_topic_with_two_types_before_publishing_anything(tmp_path):
    from bgprompt_core.messages.bag_frames import typestore

    ts = typestore()
    number = ts.serialize_cdr(ts.types["std_msgs/msg/Int32"](data=7), "std_msgs/msg/Int32")
    bag = _write_bag(tmp_path / "b", [("/h26_two", "std_msgs/msg/String", 1, _string_cdr("a")),
                                      ("/h26_two", "std_msgs/msg/Int32", 2, number),
                                      ("/h26_two", "std_msgs/msg/String", 3, _string_cdr("b")),
                                      ("/h26_fine", "std_msgs/msg/String", 4, _string_cdr("c"))])
    out = subprocess.run([str(BIN / "bgprompt"), "bag", "play", str(bag)], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert ("topic /h26_two carries 2 types in this bag (std_msgs/msg/Int32 x1, std_msgs/msg/String x2)"
            in out.stderr), out.stderr
    assert "--topics" in out.stderr and "published" not in out.stdout
    # leaving it out plays the rest
    ok = subprocess.run([str(BIN / "bgprompt"), "bag", "play", str(bag), "--topics", "/h26_fine"], env=_env(tmp_path),
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "published 1 messages" in ok.stdout, ok.stderr


def test_play_of_a_bag_that_cannot_be_opened_is_an_error_line(tmp_path):
    bag = _write_bag(tmp_path / "b", [("/h26_x", "std_msgs/msg/String", 1, _string_cdr("a"))])
    (bag / "metadata.yaml").unlink()  # what a recorder killed by a full disk used to leave
    out = subprocess.run([str(BIN / "bgprompt"), "bag", "play", str(bag)], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "cannot be opened as a bag" in out.stderr and "metadata" in out.stderr, out.stderr
