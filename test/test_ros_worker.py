"""object_depth_node's worker and logging, in-process (real rclpy, loopback only, node never configured)."""
import os
import threading

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402

from bgprompt_ros.node import ObjectDepthNode  # noqa: E402


@pytest.fixture
def node():
    assert os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"  # conftest / make test set it
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    n = ObjectDepthNode(context=ctx, namespace="/worker_unit", start_parameter_services=False)
    yield n
    n.destroy_node()
    rclpy.try_shutdown(context=ctx)


def test_a_warning_then_an_error_of_the_same_kind_of_call_never_raises(node):
    """The reported defect: `_log_throttled` called the logger at two severities from one call site, and rclpy
    raised `Logger severity cannot be changed between calls` inside the worker's except block."""
    for level, text in [("warning", "skipped frame: mask is 10x10"), ("error", "frame failed: boom"),
                        ("warning", "skipped frame: again"), ("info", "note")]:
        node._log_throttled(level, text)
    node._fault("bad_input", "skipped frame: a")
    node._fault("error", "frame failed: b")
    assert node.counters["log_failures"] == 0 and set(node.faults) == {"bad_input", "error"}


def test_the_throttle_keys_on_the_kind_of_problem_not_on_its_numbers(node):
    """The reported defect: per-frame numbers in the text made every frame's warning a new one (16 warnings in 16
    frames)."""
    said = []
    node._emit = lambda level, text: said.append(text)
    for k in range(16):
        node._log_throttled("warning", f"only the {k + 10} largest objects are kept (0.{k}5 of the mask)", period=60)
    node._log_throttled("warning", "object 3: 42% of its readings are see-through", period=60)
    assert len(said) == 2


def test_a_worker_that_dies_says_error_and_ends_the_process(node):
    """Should the worker ever die, /diagnostics says ERROR naming why and main() exits 1 (fatal_event)."""
    got = []
    node._diag_pub.publish = got.append
    node.estimator = object()  # as if configured: the not-configured ERROR would hide the worker's
    node._slot = ({}, 0.0)
    node._serve = lambda frame, received: (_ for _ in ()).throw(SystemError("a bug outside any frame handler"))
    worker = threading.Thread(target=node._work, name="object_depth_worker")
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive() and node.fatal_event.is_set()
    st = got[-1].status[0]
    assert isinstance(got[-1], DiagnosticArray) and st.level == DiagnosticStatus.ERROR
    assert "worker died: SystemError: a bug outside any frame handler" in st.message


def test_inputs_lost_on_the_way_are_named_with_the_fix(node, monkeypatch):
    """The reported defect: without a Fast DDS profile 600x400 rgb8 frames were lost (1 of 3 came out) while the
    diagnostics said ok. An input topic that delivers far fewer messages than another is named."""
    from bgprompt_core.sync import Synchronizer

    for var in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        monkeypatch.delenv(var, raising=False)
    node.sync = Synchronizer(["image", "camera_info", "mask"])
    found = node.silent_failures({"image": 1, "camera_info": 10, "mask": 10})
    assert any("inputs lost on the way: image 1 vs 10" in f and "fastdds_large_messages.xml" in f for f in found)
    assert not any("lost" in f for f in node.silent_failures({"image": 9, "camera_info": 10, "mask": 10}))
