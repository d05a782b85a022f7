"""``object_depth_node``: a managed (lifecycle) rclpy node over bgprompt_core's ObjectDepthEstimator.

configure: load the model / build or load the TensorRT engine, create publishers.
activate: subscribe (image, camera_info, mask, sensor_depth as configured).
deactivate / cleanup: unsubscribe / release. ``autostart`` runs configure + activate at start.

Subscription callbacks only decode stamps and feed the synchronizer; matched frames go into a
latest-only slot that a worker thread drains, so inference never backs up DDS; frames superseded
before processing are counted as drops. Every output carries the input image's header.

Two stages, pipelined: the worker decodes a frame and runs the estimator; a publisher thread builds and publishes
its messages while the worker already runs the next frame's network. One result at a time waits between them (the
worker waits for the publisher, so frames are dropped only at the input slot), and outputs leave in frame order.

Never silently dead: a frame that fails is logged, counted, named on /diagnostics and skipped; should the worker
itself ever die, /diagnostics says ERROR and the process exits 1 (so that a launch file's ``respawn`` restarts
it). Parameters are read as configured: a change that needs cleanup + configure is reported as pending and
applies only then; /diagnostics shows what runs.

This module holds the lifecycle, the two stages' threads and the data path. Mixed in: the parameters
(ros_parameters.py) and what /diagnostics tracks and says (diagnostics.py); the output messages: messages.py.
"""
from __future__ import annotations

import os

# No progress bars in a node's log (transformers draws one per model load); set before transformers is imported.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import math  # noqa: E402
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from visualization_msgs.msg import MarkerArray

from bgprompt_core.frame.estimator import ObjectDepthEstimator
from bgprompt_core.messages.sync import Synchronizer

from . import conversions, messages
from .diagnostics import NodeDiagnostics, stage_running
from .params import PARAMETERS, invalid, unknown_names
from .ros_parameters import NodeParameters


class ObjectDepthNode(NodeParameters, NodeDiagnostics, LifecycleNode):
    """The object-depth node; its parameters (ros_parameters.py) and diagnostics (diagnostics.py) are mixed in."""

    def __init__(self, **kwargs):
        super().__init__("object_depth", **kwargs)
        self._declare_parameters()  # ros_parameters.py
        # /diagnostics lives as long as the node: a failed configure is reported there too
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._idle_timer = self.create_timer(1.0, self._publish_unconfigured)
        self.estimator: ObjectDepthEstimator | None = None
        self.subs: list = []
        self.pubs: dict = {}
        self.sync: Synchronizer | None = None
        self._slot = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._worker: Future | threading.Thread | None = None  # the worker loop, on the model thread
        # the publish stage: one result handed over at a time (``_handoff``), taken by ``_publisher`` in order
        self._result = None
        self._result_cond = threading.Condition()
        self._publisher: threading.Thread | None = None
        self._counter_lock = threading.Lock()  # both stages count
        # every model call (load, estimate, composite) runs on this one thread: torch's OpenMP pool belongs to the
        # thread that first used it, and a model loaded on one thread but run on another ran 2x slower here
        # (mini: 12 -> 27 ms per forward on 2 cores; make bench). The worker loop itself runs there while active, so
        # a frame does not hop threads on its way into the network
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="object_depth_model")
        self._init_diagnostics()  # counters, timings, faults, input figures (diagnostics.py)
        self._diag_timer = None
        self.configured: dict = {}  # the values configure applied; run-time changes of reload parameters wait
        self.fatal = ""  # why the worker died; the process then exits 1
        self.fatal_event = threading.Event()
        self.activated_at: float | None = None  # time.monotonic() of the last activation

    # --- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        # values given at start-up never went through the set-parameters callback: the same rules here
        bad = [reason for name in PARAMETERS if (reason := invalid(name, self.p(name)))]
        unknown = unknown_names(self._parameter_overrides)  # rclpy ignores undeclared names: refuse them here
        bad += [unknown] if unknown else []
        if bad:
            return self._configure_failed("; ".join(bad))
        try:
            t0 = time.perf_counter()
            self.estimator = self._model_thread.submit(ObjectDepthEstimator, self.estimator_config()).result()
            self.configured = {name: self.p(name) for name in PARAMETERS}
            self.configure_problem = ""
            spec = self.estimator.spec
            self.get_logger().info(f"loaded {spec.name} ({spec.output_kind}, {spec.input_size[0]}x{spec.input_size[1]}) "
                                   f"prompt={self.p('prompt')} backend={self.p('backend')} in "
                                   f"{time.perf_counter() - t0:.1f} s; depth units: "
                                   f"{'metres' if self.p('scale') != 'relative' else 'relative (up to scale)'}")
            if self.estimator.model is None and self.p("publish_composite"):
                self.get_logger().info("no composite previews: the exported graph runs without torch (set backend "
                                       "torch to see them)")
        except Exception as exc:  # a bad config must fail the transition with the reason, not crash
            self.estimator = None
            return self._configure_failed(str(exc))
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.p("pub_depth"), reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {
            # object_depth/image + object_depth/camera_info: image_transport's sibling rule, so depth_image_proc and
            # RViz's DepthCloud find the info without remaps. DEPRECATED, removed after 0.2: the old depth topic
            # `object_depth`, published only while something subscribes to it (remap consumers to object_depth/image)
            "depth": self.create_lifecycle_publisher(Image, "object_depth/image", qos),
            "depth_legacy": self.create_lifecycle_publisher(Image, "object_depth", qos),
            "info": self.create_lifecycle_publisher(CameraInfo, "object_depth/camera_info", qos),
            "cloud": self.create_lifecycle_publisher(PointCloud2, "object_points", qos),
            "composite": self.create_lifecycle_publisher(Image, "composite", qos),
            "markers": self.create_lifecycle_publisher(MarkerArray, "object_markers", qos),
            "diag": self._diag_pub,
        }
        if self.c("scale") == "relative":
            self.get_logger().info("scale relative: object_depth and object_points are in relative units (up to "
                                   "scale, each object on its own), not metres; object_markers are not published")
        self._diag_timer = self.create_timer(self.p("diagnostics_period"), self._publish_diagnostics)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if any(stage_running(t) for t in (self._worker, self._publisher)):  # never two at once
            self.get_logger().error("activate refused: the previous worker is still finishing a frame")
            return TransitionCallbackReturn.FAILURE
        # what configure applied, never a value changed since (that one is pending until cleanup + configure)
        topics = ["image", "camera_info"]
        if self.c("segmentation") == "mask_topic":
            topics.append("mask")
        if self.c("scale") == "align-to-sensor":
            topics.append("sensor_depth")
        self.sync = Synchronizer(topics, self.c("sync_mode"), self.c("sync_slop"), self.c("queue_size"),
                                 min_period=self.c("sync_min_period"))
        best_effort = self.c("sub_reliability") == "best_effort"
        reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.c("queue_size"), reliability=reliability,
                         durability=qos_profile_sensor_data.durability)
        types = {"image": Image, "camera_info": CameraInfo, "mask": Image, "sensor_depth": Image}
        self.subs = [self.create_subscription(types[t], t, lambda msg, t=t: self._on_message(t, msg), qos)
                     for t in topics]
        self._stop.clear()
        self.last_input = self.last_match = None
        self.activated_at = time.monotonic()
        self._input_window = {t: 0 for t in topics}
        self._result = None
        self._publisher = threading.Thread(target=self._publish_results, name="object_depth_publisher", daemon=True)
        self._publisher.start()
        self._worker = self._model_thread.submit(self._work)
        super().on_activate(state)  # enables the lifecycle publishers
        self.get_logger().info(f"active: subscribed to {[self.resolve_topic_name(t) for t in topics]}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        super().on_deactivate(state)  # publishers off first: a frame in flight publishes nothing
        self._stop_worker()
        with self._cond:
            self._slot = None  # a frame received before deactivation is never published after it
        with self._result_cond:
            self._result = None
        for s in self.subs:
            self.destroy_subscription(s)
        self.subs = []
        self.activated_at = None
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for name, pub in self.pubs.items():
            if name != "diag":
                self.destroy_lifecycle_publisher(pub)
        self.pubs = {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        self.estimator = None
        self.configured = {}
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().info(f"lifecycle shutdown from {state.label}: stopping the worker")
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._stop.set()  # a worker loop still on the model thread ends within 0.2 s (its thread is not a daemon)
        with self._cond:
            self._cond.notify_all()
        self._model_thread.shutdown(wait=False, cancel_futures=True)
        super().destroy_node()

    @property
    def state_label(self) -> str:
        return self._state_machine.current_state[1]

    def _stop_worker(self) -> None:
        self._stop.set()
        for cond in (self._cond, self._result_cond):
            with cond:
                cond.notify_all()
        # both stages stop between frames: wait for the frame in flight (bounded by one inference / one publish)
        for attr, what in (("_worker", "worker"), ("_publisher", "publisher")):
            stage = getattr(self, attr)
            if stage is None:
                continue
            if isinstance(stage, Future):
                wait([stage], timeout=120.0)
            else:
                stage.join(timeout=120.0)
            if stage_running(stage):
                self.get_logger().error(f"the {what} did not stop within 120 s; it publishes nothing (publishers "
                                        f"are deactivated) and activation is refused until it ends")
                continue
            setattr(self, attr, None)

    # --- data path ----------------------------------------------------------------------------
    def _on_message(self, topic: str, msg) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.last_input = time.monotonic()
        self._input_window[topic] = self._input_window.get(topic, 0) + 1
        jumps = self.sync.stats.jumps
        sets = self.sync.add(topic, stamp, msg)
        if self.sync.stats.jumps != jumps:
            before, after = self.sync.stats.last_jump
            self._fault("stamp_jump", f"input stamps went back {(before - after) / 1e9:.3f} s (a looped bag, a "
                                      f"camera clock restart or a frame stamped in the future): synchronization "
                                      f"started over")
        if not sets:
            return
        self.last_match = self.last_input
        matched = sets[-1]  # latest-only: older sets completed by the same message were superseded
        if len(sets) > 1:
            self._count("dropped_overload", len(sets) - 1)
        with self._cond:
            if self._slot is not None:
                self._count("dropped_overload")  # latest-only: the older frame was never started
            self._slot = (matched, time.time())
            self._cond.notify()

    def _work(self) -> None:
        """The worker loop, run on the model thread while active (named object_depth_worker meanwhile)."""
        me = threading.current_thread()
        name, me.name = me.name, "object_depth_worker"
        try:
            while not self._stop.is_set():
                with self._cond:
                    while self._slot is None and not self._stop.is_set():
                        self._cond.wait(timeout=0.2)
                    if self._stop.is_set():
                        return
                    frame, received = self._slot
                    self._slot = None
                self._serve(frame, received)
        except BaseException as exc:  # noqa: B036 - nothing may end the worker unseen
            self._worker_died(exc)
        finally:
            me.name = name

    def _serve(self, frame: dict, received: float) -> None:
        """One frame: handed to the publisher, or counted, logged and named on /diagnostics as skipped (bad input)
        or failed."""
        self._guarded(self._process, frame, received)

    def _count(self, key: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[key] += n

    def _handoff(self, result: tuple) -> None:
        """Give one estimated frame to the publisher: waits while the previous one is not taken yet (so frames
        leave in order and are dropped only at the input slot); dropped when the node stops meanwhile."""
        with self._result_cond:
            while self._result is not None and not self._stop.is_set():
                self._result_cond.wait(timeout=0.2)
            if self._stop.is_set():
                return
            self._result = result
            self._result_cond.notify_all()

    def _publish_results(self) -> None:
        """The publisher thread: each handed-over frame's messages, in the order the worker estimated them."""
        try:
            while True:
                with self._result_cond:
                    while self._result is None and not self._stop.is_set():
                        self._result_cond.wait(timeout=0.2)
                    if self._stop.is_set():  # a frame estimated before deactivation is not published after it
                        self._result = None
                        return
                    result, self._result = self._result, None
                    self._result_cond.notify_all()
                self._guarded(self._publish, *result)
        except BaseException as exc:  # noqa: B036 - nothing may end the publisher unseen
            self._worker_died(exc, "publisher")

    def _process(self, frame: dict, received: float) -> None:
        """The worker's stage (on the model thread): decode, estimate, then hand the result to the publisher."""
        f = conversions.decode_frame(frame, mask_labels=self.p("mask_labels"))
        if f.distortion:
            self._log_throttled("warning", f.distortion, period=math.inf, kind=f.distortion)  # once per calibration
        if f.mask_note:
            self._log_throttled("warning", f.mask_note, period=30.0, kind="mask values")
        rgb, K, mask, sensor = f.rgb, f.K, f.mask, f.sensor
        res = self.estimator.estimate(rgb, K, mask, sensor)
        if self._stop.is_set():  # deactivated while this frame was in the network: it is not published
            return
        if self.p("max_depth") > 0:
            res.limit_depth(self.p("max_depth"))
        for w in res.warnings:
            self._log_throttled("warning", w, period=5.0)
        comp = None  # the composite preview is model work: here, not on the publisher
        if (self.p("publish_composite") and mask is not None and self.estimator.model is not None
                and self.pubs["composite"].get_subscription_count() > 0):
            comp = self.estimator.composite_preview(rgb, mask, K)
        self._handoff((frame, f, res, comp, received))

    def _publish(self, frame: dict, f: conversions.Frame, res, comp: np.ndarray | None, received: float) -> None:
        """The publisher's stage: one frame's messages (only for topics someone listens to), then its counters."""
        if self._stop.is_set():
            return
        header = frame["image"].header
        self._publish_depth(header, res)
        self.pubs["info"].publish(messages.camera_info(CameraInfo, header, frame["camera_info"], f.rgb.shape))
        if self.pubs["cloud"].get_subscription_count() > 0:
            self.pubs["cloud"].publish(messages.object_cloud(
                PointCloud2, PointField, header, res, f.rgb, with_rgb=self.p("cloud_rgb"),
                organized=self.p("cloud_mode") == "organized", labels=self.p("cloud_labels")))
        if comp is not None:
            self.pubs["composite"].publish(messages.composite_image(Image, header, comp))
        if res.units != "relative" and self.pubs["markers"].get_subscription_count() > 0:  # boxes need metres
            self.pubs["markers"].publish(messages.marker_array(header, res))
        self._note_result(res, received)

    def _publish_depth(self, header, res) -> None:
        """object_depth/image (and the deprecated object_depth), built once if anyone listens to either."""
        depth_pubs = [self.pubs[k] for k in ("depth", "depth_legacy") if self.pubs[k].get_subscription_count() > 0]
        if not depth_pubs:
            return
        depth_msg = messages.depth_image(Image, header, res)
        for pub in depth_pubs:
            pub.publish(depth_msg)
        if self.pubs["depth_legacy"] in depth_pubs:
            self._log_throttled("warning", f"{self.pubs['depth_legacy'].topic_name} is deprecated and goes after "
                                f"0.2: subscribe to {self.pubs['depth'].topic_name} (with its camera_info beside "
                                f"it)", period=math.inf)


def main(args=None) -> None:
    """Spin until SIGINT/SIGTERM or an external shutdown, then run the lifecycle shutdown transition.

    rclpy's own signal handler shuts the context down first, after which no transition can be published;
    so this process handles the signals itself and spins in short slices to notice them promptly.
    """
    import signal

    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = ObjectDepthNode()
    # Callbacks only hand frames to the worker thread, so one executor thread is enough. rclpy's
    # MultiThreadedExecutor was measured here to hold a ready subscription back until the next timer
    # event (p95 image -> cloud 0.7-1.4 s with the 1 Hz diagnostics timer, 50 ms with this executor).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.p("autostart"):
            node.trigger_configure()
            if node.estimator is not None:
                node.trigger_activate()
        while not stop.is_set() and not node.fatal_event.is_set() and rclpy.ok() and node.state_label != "finalized":
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if rclpy.ok() and node.state_label != "finalized":
            node.trigger_shutdown()
        node._stop_worker()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    if node.fatal:  # a dead worker: exit 1, so that respawn (launch) or a supervisor restarts the node
        raise SystemExit(1)
