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
"""
from __future__ import annotations

import os

# No progress bars in a node's log (transformers draws one per model load); set before transformers is imported.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import math  # noqa: E402
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
import time
import traceback
from collections import deque

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from visualization_msgs.msg import MarkerArray

from bgprompt_core.frame.estimator import EstimatorConfig, InputError, ObjectDepthEstimator
from bgprompt_core.frame.object_summary import summarize_objects
from bgprompt_core.messages.sync import Synchronizer

from . import conversions
from .markers import object_markers
from .params import PARAMETERS, TYPE_WORDS, coerce, estimator_config_from_params, invalid, unknown_names

PROFILE_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")  # Fast DDS 2.x (Jazzy), 3.x


class ObjectDepthNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("object_depth", **kwargs)
        for name, (default, desc, allowed, reload) in PARAMETERS.items():
            text = (f"{desc} ({TYPE_WORDS[type(default)]})" + (f"; one of {list(allowed)}" if allowed else "")
                    + ("; needs cleanup+configure" if reload else ""))
            # dynamically typed: `max_depth: 2` is 2.0, and a wrong type (`device: 0`) fails configure with the
            # reason (params.invalid) instead of raising InvalidParameterTypeException here
            self.declare_parameter(name, default, ParameterDescriptor(name=name, dynamic_typing=True, description=text))
        self.add_on_set_parameters_callback(self._on_set_parameters)
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
        self.counters = {"processed": 0, "dropped_overload": 0, "skipped_bad_input": 0, "errors": 0, "log_failures": 0}
        self.latencies: deque = deque(maxlen=200)
        self.done_times: deque = deque(maxlen=200)
        self.network_ms: deque = deque(maxlen=200)
        self.last_problem = ""
        self.configure_problem = ""
        self.last_fusion: dict[int, dict | None] = {}
        # silent failures the diagnostics must name: nothing finite published, inputs that never pair up
        self.no_finite_streak = 0
        self.last_input = self.last_match = None  # time.monotonic() of the last message / matched set
        self.sensor_coverage: float | None = None
        self._logged: dict[str, float] = {}
        self._diag_timer = None
        self.configured: dict = {}  # the values configure applied; run-time changes of reload parameters wait
        self.fatal = ""  # why the worker died; the process then exits 1
        self.fatal_event = threading.Event()
        self.activated_at: float | None = None  # time.monotonic() of the last activation
        self.faults: dict[str, tuple[float, str]] = {}  # kind -> (time.monotonic(), text) of recent frame problems
        self._input_window: dict[str, int] = {}  # per topic: messages received since the last diagnostics

    # --- parameters ---------------------------------------------------------------------------
    def p(self, name: str):
        """The parameter's current value (a whole number for a decimal parameter as a float)."""
        return coerce(name, self.get_parameter(name).value)

    def c(self, name: str):
        """The value configure applied (the current one before the first configure): what runs."""
        return self.configured[name] if name in self.configured else self.p(name)

    def pending(self) -> dict:
        """Parameters changed since configure that apply only after cleanup + configure."""
        return {n: self.p(n) for n, v in self.configured.items() if PARAMETERS[n][3] and self.p(n) != v}

    def _on_set_parameters(self, params) -> SetParametersResult:
        for prm in params:
            reason = invalid(prm.name, prm.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if prm.name in PARAMETERS and PARAMETERS[prm.name][3] and self.estimator is not None:
                self._log_throttled("warning", f"parameter {prm.name} changed to {prm.value!r}: pending, it applies "
                                    f"after cleanup + configure (running: {self.c(prm.name)!r})", period=0.0)
        return SetParametersResult(successful=True)

    def estimator_config(self) -> EstimatorConfig:
        # max_depth takes effect at once: the node applies its current value to every result instead
        return estimator_config_from_params({**{name: self.p(name) for name in PARAMETERS}, "max_depth": 0.0})

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

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        """Log the reason and say it on /diagnostics (ERROR): the node stays unconfigured, never silently."""
        self.get_logger().error(f"configure failed: {reason}")
        self.configure_problem = reason
        self._publish_unconfigured()
        return TransitionCallbackReturn.FAILURE

    def _publish_unconfigured(self) -> None:
        """While not configured, say so once a second on /diagnostics (ERROR), with the reason when there is one."""
        if self.estimator is not None:
            return
        text = f"configure failed: {self.configure_problem}" if self.configure_problem else "not configured"
        st = DiagnosticStatus(name=f"{self.get_name()}: object depth", level=DiagnosticStatus.ERROR,
                              message=text[:800], hardware_id=str(self.p("backend")))
        msg = DiagnosticArray(status=[st])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if any(_running(t) for t in (self._worker, self._publisher)):  # never two at once
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
            if _running(stage):
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

    def _guarded(self, stage, *args) -> None:
        """Run one stage of one frame; a frame that fails is counted, logged and named, never raised."""
        try:
            stage(*args)
        except (InputError, conversions.ConversionError, ValueError) as exc:
            self._count("skipped_bad_input")
            self._fault("bad_input", f"skipped frame: {exc}")
        except Exception as exc:  # never let a stage die: log, count, keep serving
            self._count("errors")
            self._fault("error", f"frame failed: {type(exc).__name__}: {exc}", traceback.format_exc())

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

    def _fault(self, kind: str, text: str, detail: str = "") -> None:
        """A problem with the input or a frame: kept for /diagnostics (named while it lasts) and logged, throttled by
        its kind; logging can never raise into the caller."""
        self.faults[kind] = (time.monotonic(), text)
        self.last_problem = text
        level = "error" if kind == "error" else "warning"
        try:  # throttled by the text with its numbers masked: two different bad inputs are both logged
            self._log_throttled(level, text, detail)
        except Exception:  # noqa: BLE001 - a logger that raises must not take the worker with it
            self._count("log_failures")

    def _worker_died(self, exc: BaseException, who: str = "worker") -> None:
        """The worker (or the publisher) ended on an exception no frame handler caught: ERROR on /diagnostics, and
        the process exits 1 (main) so that a supervisor (launch respawn, systemd) restarts it instead of trusting an
        `active` node."""
        self.fatal = f"{who} died: {type(exc).__name__}: {exc}"
        try:
            self.get_logger().fatal(f"{self.fatal}; exiting so that respawn restarts the node\n"
                                    f"{traceback.format_exc()}")
            self._publish_diagnostics()
        finally:
            self.fatal_event.set()

    def _emit(self, level: str, text: str) -> None:
        """One call site per severity: rclpy raises when one call site logs at two severities (the reported
        defect: a warning, then an error from the same line, killed the worker)."""
        logger = self.get_logger()
        if level == "error":
            logger.error(text)
        elif level == "warning":
            logger.warning(text)
        else:
            logger.info(text)

    def _log_throttled(self, level: str, text: str, detail: str = "", period: float = 1.0, kind: str = "") -> None:
        """Log at once, then one message of the same kind at most once per ``period`` s.

        The kind is ``kind``, or the text with its numbers masked: per-frame figures ("the 16 largest objects",
        "42% see-through") do not make a new kind. rclpy's throttle is per call site, which would hide a second,
        different problem within the period.
        """
        key = f"{level}:{kind or re.sub(r'[-+]?[0-9][0-9.e+-]*', '#', text)}"
        now = time.monotonic()
        if now - self._logged.get(key, -math.inf) < period:
            return
        if len(self._logged) > 256:
            self._logged.clear()
        self._logged[key] = now
        self._emit(level, text + (f"\n{detail}" if detail else ""))

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
        img_msg, info = frame["image"], frame["camera_info"]
        rgb = f.rgb
        header = img_msg.header
        # messages are built only for topics someone listens to; buffers go into them without a copy
        depth_pubs = [self.pubs[k] for k in ("depth", "depth_legacy") if self.pubs[k].get_subscription_count() > 0]
        if depth_pubs:
            depth_msg = conversions.depth_image_message(Image, header, res.depth)
            for pub in depth_pubs:
                pub.publish(depth_msg)
            if self.pubs["depth_legacy"] in depth_pubs:
                self._log_throttled("warning", f"{self.pubs['depth_legacy'].topic_name} is deprecated and goes after "
                                    f"0.2: subscribe to {self.pubs['depth'].topic_name} (with its camera_info beside "
                                    f"it)", period=math.inf)
        info_out = CameraInfo(header=header, height=info.height or rgb.shape[0], width=info.width or rgb.shape[1],
                              distortion_model=info.distortion_model, d=info.d, k=info.k, r=info.r, p=info.p,
                              binning_x=info.binning_x, binning_y=info.binning_y, roi=info.roi)
        self.pubs["info"].publish(info_out)
        if self.pubs["cloud"].get_subscription_count() > 0:
            labels = self.p("cloud_labels")
            self.pubs["cloud"].publish(conversions.cloud_message(
                PointCloud2, PointField, header, res.depth, res.K, rgb if self.p("cloud_rgb") else None,
                organized=self.p("cloud_mode") == "organized", label=res.instance if labels else None,
                source=res.source if labels else None))
        if comp is not None:
            self.pubs["composite"].publish(Image(header=header, height=comp.shape[0], width=comp.shape[1],
                                                 encoding="rgb8", is_bigendian=0, step=comp.shape[1] * 3,
                                                 data=comp.tobytes()))
        if res.units != "relative" and self.pubs["markers"].get_subscription_count() > 0:  # boxes need metres
            summaries = summarize_objects(res.depth, res.instance, res.K, res.object_ids, res.source)
            self.pubs["markers"].publish(object_markers(summaries, header, res.units))
        self.last_fusion = {oid: rep.as_dict() if rep else None for oid, rep in res.fusion.items()}
        self.no_finite_streak = 0 if res.valid.any() else self.no_finite_streak + 1
        if res.fusion:
            self.sensor_coverage = float(np.mean([r.coverage if r else 0.0 for r in res.fusion.values()]))
        now = time.time()
        self._count("processed")
        self.latencies.append(now - received)
        self.done_times.append(now)
        self.network_ms.append(res.timing_ms["network"])

    def _window(self) -> dict[str, int]:
        """Per input topic: messages received since the last call (one diagnostics period)."""
        out, self._input_window = self._input_window, {t: 0 for t in self._input_window}
        return out

    def silent_failures(self, window: dict[str, int] | None = None) -> list[str]:
        """Causes of an output that looks healthy but is not: nothing finite, no input, inputs that stopped or never
        pair up, inputs lost on the way, no sensor readings; and each frame problem while it lasts."""
        out = []
        now = time.monotonic()
        stalled = max(2.0, 5 * self.c("diagnostics_period"))
        out += [text for kind, (t, text) in sorted(self.faults.items()) if now - t < stalled]
        if self.no_finite_streak:
            out.append(f"no finite depth for {self.no_finite_streak} frame(s)")
        if self.sensor_coverage == 0.0:
            out.append("sensor coverage 0: no valid sensor_depth reading on any object")
        topics = self.sync.topics if self.sync else []
        if self.activated_at is not None and self.last_input is None and now - self.activated_at > stalled:
            out.append(f"no input on {[self.resolve_topic_name(t) for t in topics]} for {now - self.activated_at:.0f}"
                       f" s since activation: check the topic names (remaps) and QoS (sub_reliability "
                       f"{self.c('sub_reliability')} must be offered by the publishers)")
        elif self.activated_at is not None and self.last_input is not None and now - self.last_input > stalled:
            out.append(f"inputs stopped {now - self.last_input:.0f} s ago")
        elif self.last_input is not None and (self.last_match is None or now - self.last_match > stalled):
            since = "yet" if self.last_match is None else f"for {now - self.last_match:.0f} s"
            out.append(f"no sync match {since} while inputs arrive: check the stamps of {topics} "
                       f"({self.c('sync_mode')} sync)")
        window = window or {}
        most = max(window.values(), default=0)
        starved = [t for t, n in window.items() if most >= 3 and n < most / 2]
        if starved:
            profile = any(os.environ.get(v) for v in PROFILE_VARS)
            out.append(f"inputs lost on the way: {', '.join(f'{t} {window[t]}' for t in starved)} vs {most} messages "
                       f"on another input in the last period" + ("" if profile else
                       "; large images over best-effort DDS need a Fast DDS profile (the launch file sets "
                       "config/fastdds_large_messages.xml; give the camera driver the same)"))
        return out

    def _publish_diagnostics(self) -> None:
        st = DiagnosticStatus(name=f"{self.get_name()}: object depth", hardware_id=str(self.c("backend")))
        t = list(self.done_times)
        rate = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0
        lat = sorted(self.latencies)
        stats = self.sync.stats if self.sync else None
        workers = sum(th.name == "object_depth_worker" and th.is_alive() for th in threading.enumerate())
        pending = self.pending()
        values = {"workers": str(workers),
                  "rate_hz": f"{rate:.2f}", "latency_p50_ms": f"{1e3 * lat[len(lat) // 2]:.1f}" if lat else "nan",
                  "latency_max_ms": f"{1e3 * lat[-1]:.1f}" if lat else "nan",
                  "network_ms": f"{np.median(self.network_ms):.1f}" if self.network_ms else "nan",
                  "sync_dropped": str(sum(stats.dropped.values()) if stats else 0),
                  "stamp_jumps": str(stats.jumps if stats else 0),
                  "received": ", ".join(f"{k}={v}" for k, v in stats.received.items()) if stats else "",
                  # what runs: the configured values (a change waits for cleanup + configure: pending)
                  "backend": str(self.c("backend")), "model": str(self.c("model")), "prompt": str(self.c("prompt")),
                  "scale": str(self.c("scale")), "segmentation": str(self.c("segmentation")),
                  "depth_units": "metres" if self.c("scale") != "relative" else "relative (up to scale, not metres)",
                  "pending": ", ".join(f"{k}={v!r}" for k, v in pending.items()),
                  "last_problem": self.last_problem, **{k: str(v) for k, v in self.counters.items()},
                  **{f"object_{oid}_fusion": (", ".join(f"{k}={v}" for k, v in rep.items()) if rep else "left out")
                     for oid, rep in self.last_fusion.items()}}
        silent = self.silent_failures(self._window())
        values.update(no_finite_frames=str(self.no_finite_streak),
                      sensor_coverage="n/a" if self.sensor_coverage is None else f"{self.sensor_coverage:.3f}",
                      seconds_since_match="never" if self.last_match is None else
                      f"{time.monotonic() - self.last_match:.1f}")
        st.level, st.message = DiagnosticStatus.OK, "ok"
        if silent:
            st.level, st.message = DiagnosticStatus.WARN, "; ".join(silent)[:400]
        if pending:
            st.message = f"{st.message}; pending until cleanup + configure: {values['pending']}"[:400]
        active = self.state_label == "active"
        publishing = _running(self._publisher)
        if self.fatal or (active and self.activated_at is not None and not (workers and publishing)
                          and not self._stop.is_set()):
            st.level, st.message = DiagnosticStatus.ERROR, (self.fatal or "the worker is not running")[:400]
        if self.estimator is None:
            st.level, st.message = DiagnosticStatus.ERROR, "not configured"
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[st])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def _running(stage: Future | threading.Thread | None) -> bool:
    """Whether a stage (the worker's future on the model thread, or a thread) is still running."""
    if stage is None:
        return False
    return not stage.done() if isinstance(stage, Future) else stage.is_alive()


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
