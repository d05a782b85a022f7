"""object_depth_node's worker and logging, in-process (real rclpy, loopback only, node never configured)."""
import os
import threading
import time

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
    from bgprompt_core.messages.sync import Synchronizer

    for var in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        monkeypatch.delenv(var, raising=False)
    node.sync = Synchronizer(["image", "camera_info", "mask"])
    found = node.silent_failures({"image": 1, "camera_info": 10, "mask": 10})
    assert any("inputs lost on the way: image 1 vs 10" in f and "fastdds_large_messages.xml" in f for f in found)
    assert not any("lost" in f for f in node.silent_failures({"image": 9, "camera_info": 10, "mask": 10}))


def test_each_frame_that_lost_its_image_is_named_in_the_next_period(node, monkeypatch):
    """The bench's flood: 29 of 90 images lost, the rate check (less than half of another input) silent. The
    synchronizer's unpaired stamps name every such frame, once: the next period is clean again."""
    from bgprompt_core.messages.sync import Synchronizer

    for var in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        monkeypatch.delenv(var, raising=False)
    node.sync = Synchronizer(["image", "camera_info", "mask"])
    for t in range(1, 31):
        for topic in ("camera_info", "mask") + (("image",) if t % 3 else ()):
            node.sync.add(topic, t, topic)
    window = {"image": 20, "camera_info": 30, "mask": 30}
    found = [f for f in node.silent_failures(window, node._unpaired_window()) if "lost" in f]
    assert len(found) == 1 and "inputs lost on the way: 9 frame(s) without image" in found[0]  # stamps 3, ..., 27
    assert "fastdds_large_messages.xml" in found[0]
    assert not any("lost" in f for f in node.silent_failures(window, node._unpaired_window()))


_LOGGED = threading.Condition()  # notified whenever a stand-in below logs: the tests' readiness signal


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    """Wait until ``predicate()`` holds, woken by each stand-in's log entry; False at the deadline."""
    with _LOGGED:
        return _LOGGED.wait_for(predicate, timeout)


def _logged(log: list, entry: tuple) -> None:
    with _LOGGED:
        log.append(entry)
        _LOGGED.notify_all()


class _Recorder:
    """A publisher stand-in: records (stamp, start, end) of each publish, which takes ``delay()`` seconds."""

    def __init__(self, log: list, name: str, delay, listeners: int = 1):
        self.log, self.name, self.delay, self.listeners = log, name, delay, listeners
        self.topic_name = name

    def get_subscription_count(self) -> int:
        return self.listeners

    def publish(self, msg) -> None:
        start = time.perf_counter()
        time.sleep(self.delay())  # the stand-in's work
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        _logged(self.log, (self.name, stamp, start, time.perf_counter()))


class _SlowEstimator:
    """An estimator stand-in: a real ObjectDepthResult after ``delay()`` seconds; records when each frame ran."""

    model = None

    def __init__(self, delay, log: list):
        self.delay, self.log = delay, log

    def estimate(self, rgb, K, mask, sensor):
        import numpy as np

        from bgprompt_core.frame.estimator import ObjectDepthResult

        start = time.perf_counter()
        time.sleep(self.delay())  # the stand-in's work
        h, w = rgb.shape[:2]
        depth = np.where(mask, np.float32(1.5), np.float32(np.nan)).astype(np.float32)
        valid = np.isfinite(depth)
        result = ObjectDepthResult(depth, valid, valid.astype(np.int32), [1], K, "relative",
                                   source=valid.astype(np.uint8) * 2, timing_ms={"network": 1.0})
        _logged(self.log, (int(rgb[0, 0, 0]), start, time.perf_counter()))
        return result


def _frame_msgs(stamp: int, tag: int) -> dict:
    import numpy as np
    from sensor_msgs.msg import CameraInfo, Image

    h, w = 24, 32
    img = np.full((h, w, 3), tag % 256, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[6:18, 8:24] = 255
    msgs = {"image": Image(height=h, width=w, encoding="rgb8", step=3 * w, data=img.tobytes()),
            "mask": Image(height=h, width=w, encoding="mono8", step=w, data=mask.tobytes()),
            "camera_info": CameraInfo(width=w, height=h, k=[30.0, 0.0, 15.5, 0.0, 30.0, 11.5, 0.0, 0.0, 1.0])}
    for m in msgs.values():
        m.header.stamp.sec, m.header.stamp.nanosec = stamp // 10**9, stamp % 10**9
    return msgs


def _pipeline(node, estimate_s, publish_s, log: list, est_log: list, estimator=None,
              listened=("depth", "cloud")) -> None:
    """Wire ``node`` as activate does, with stand-ins for the estimator and the publishers, and start both stages."""
    from bgprompt_core.messages.sync import Synchronizer

    node.estimator = estimator or _SlowEstimator(estimate_s, est_log)
    node.pubs = {k: _Recorder(log, k, publish_s, listeners=1 if k in listened else 0)
                 for k in ("depth", "depth_legacy", "info", "cloud", "composite", "markers")}
    node.sync = Synchronizer(["image", "camera_info", "mask"])
    node._stop.clear()
    node._worker = threading.Thread(target=node._work, name="object_depth_worker", daemon=True)
    node._publisher = threading.Thread(target=node._publish_results, name="object_depth_publisher", daemon=True)
    node._worker.start()
    node._publisher.start()


def test_outputs_leave_in_frame_order_while_publishing_overlaps_the_next_frames_network(node):
    """Pipelining (issue 29): frame k's messages are built and published while frame k + 1 is in the network, and
    every topic still carries the frames in the order they came; superseded frames are counted as drops, never
    published late. Fails with the publishing on the worker (no overlap) or with publishers that overtake."""
    import random

    rnd = random.Random(0)
    log, est_log = [], []
    _pipeline(node, lambda: rnd.uniform(0.002, 0.012), lambda: rnd.uniform(0.001, 0.010), log, est_log)
    sent = []
    stamp = 1_000_000_000
    for k in range(60):
        stamp += 10**7
        sent.append(stamp)
        for topic, msg in _frame_msgs(stamp, k).items():
            node._on_message(topic, msg)
        time.sleep(rnd.uniform(0.0, 0.012))  # pacing the stream: a camera's irregular frame times
    assert _wait_for(lambda: any(s == sent[-1] and t == "cloud" for t, s, _, _ in log))
    node._stop_worker()
    assert node.fatal == "" and node.counters["errors"] == 0 and node.counters["skipped_bad_input"] == 0
    for topic in ("depth", "info", "cloud"):
        stamps = [s for t, s, _, _ in log if t == topic]
        assert stamps == sorted(set(stamps)) and stamps[-1] == sent[-1], topic  # in order, each frame once
        assert set(stamps) <= set(sent)
    served = [s for t, s, _, _ in log if t == "cloud"]
    assert node.counters["processed"] == len(served)
    assert node.counters["processed"] + node.counters["dropped_overload"] == len(sent)
    # overlap: some frame's network ran while the previous frame's messages were being published
    overlaps = sum(1 for _, start, end in est_log if any(a < end and start < b for _, _, a, b in log))
    assert overlaps >= 5, f"the network overlapped publishing {overlaps} times"


def test_a_frame_estimated_before_deactivation_is_never_published_after_it(node):
    """A frame waiting for the publisher when the node stops is dropped, not published later (the stop check
    between the stages)."""
    log, est_log = [], []
    slow = iter([0.4] + [0.0] * 100)  # the first frame's depth image takes 0.4 s to publish
    _pipeline(node, lambda: 0.0, lambda: next(slow), log, est_log)
    for k, stamp in enumerate((2_000_000_000, 2_010_000_000)):
        for topic, msg in _frame_msgs(stamp, k).items():
            node._on_message(topic, msg)
        assert _wait_for(lambda: len(est_log) == k + 1, 10)  # the readiness signal: it went through the network
    with node._result_cond:  # the first frame is publishing (0.4 s), the second is handed over and waits for it
        node._result_cond.wait_for(lambda: node._result is not None, 10)
    assert len(est_log) == 2 and node._result is not None
    node._stop_worker()  # joins both threads: nothing can publish after it returns
    assert {s for _, s, _, _ in log} <= {2_000_000_000} and node._worker is None and node._publisher is None


def test_the_composite_preview_is_made_by_the_worker_and_published_with_its_frame(node):
    """The composite (model work, torch) is made on the worker, beside the network, and leaves with its frame."""
    import numpy as np

    made = []

    class WithModel(_SlowEstimator):
        model = object()

        def composite_preview(self, rgb, mask, K):
            made.append(threading.current_thread().name)
            return np.zeros((8, 16, 3), np.uint8)

    log, est_log = [], []
    _pipeline(node, None, lambda: 0.0, log, est_log, WithModel(lambda: 0.0, est_log), ("cloud", "composite"))
    stamps = []
    for k in range(3):
        stamps.append(3_000_000_000 + k * 10**7)
        for topic, msg in _frame_msgs(stamps[-1], k).items():
            node._on_message(topic, msg)
        # this frame's composite is out before the next frame comes (none superseded in the latest-only slot)
        assert _wait_for(lambda: sum(t == "composite" for t, *_ in log) == k + 1, 10)
    node._stop_worker()
    assert [s for t, s, _, _ in log if t == "composite"] == [s for t, s, _, _ in log if t == "cloud"] == stamps
    assert made == ["object_depth_worker"] * 3
