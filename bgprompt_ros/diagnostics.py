"""The object-depth node's /diagnostics: fault tracking, throttled logging, the silent-failure text and the message.

``NodeDiagnostics`` is mixed into ObjectDepthNode (node.py), whose state it reads: the parameters (``c``, ``p``,
``pending``), the synchronizer, the stages and counters. Never silently dead: a frame problem is logged throttled
by its kind and named while it lasts; outputs that look healthy but are not (nothing finite, no input, inputs
that never pair up or get lost on the way) turn the status to WARN; a dead worker or no configuration to ERROR.
"""
from __future__ import annotations

import math
import os
import re
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import TransitionCallbackReturn

from bgprompt_core.frame.estimator import InputError

from . import conversions

PROFILE_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")  # Fast DDS 2.x (Jazzy), 3.x


def stage_running(stage: Future | threading.Thread | None) -> bool:
    """Whether a stage (the worker's future on the model thread, or a thread) is still running."""
    if stage is None:
        return False
    return not stage.done() if isinstance(stage, Future) else stage.is_alive()


def rate_hz(done_times: list[float]) -> float:
    """Frames per second over the recent completion times (0 with fewer than two)."""
    t = done_times
    return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


class NodeDiagnostics:
    """The diagnostics half of ObjectDepthNode: what it tracks about frames and inputs, and what it says."""

    def _init_diagnostics(self) -> None:
        """The state the diagnostics read (set before any callback can run)."""
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
        self.faults: dict[str, tuple[float, str]] = {}  # kind -> (time.monotonic(), text) of recent frame problems
        self._input_window: dict[str, int] = {}  # per topic: messages received since the last diagnostics
        self._unpaired_seen: dict[str, int] = {}  # per topic: the synchronizer's unpaired count at the last one

    # --- what a published frame tells -----------------------------------------------------------
    def _note_result(self, res, received: float) -> None:
        """A published frame's figures: fusion reports, finite streak, sensor coverage, counters and timings."""
        self.last_fusion = {oid: rep.as_dict() if rep else None for oid, rep in res.fusion.items()}
        self.no_finite_streak = 0 if res.valid.any() else self.no_finite_streak + 1
        if res.fusion:
            self.sensor_coverage = float(np.mean([r.coverage if r else 0.0 for r in res.fusion.values()]))
        now = time.time()
        self._count("processed")
        self.latencies.append(now - received)
        self.done_times.append(now)
        self.network_ms.append(res.timing_ms["network"])

    # --- faults and logging ---------------------------------------------------------------------
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

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        """Log the reason and say it on /diagnostics (ERROR): the node stays unconfigured, never silently."""
        self.get_logger().error(f"configure failed: {reason}")
        self.configure_problem = reason
        self._publish_unconfigured()
        return TransitionCallbackReturn.FAILURE

    # --- the status -----------------------------------------------------------------------------
    def _window(self) -> dict[str, int]:
        """Per input topic: messages received since the last call (one diagnostics period)."""
        out, self._input_window = self._input_window, {t: 0 for t in self._input_window}
        return out

    def _unpaired_window(self) -> dict[str, int]:
        """Per input topic: stamps the synchronizer dropped without that topic's message (its other inputs came)
        since the last call."""
        now = dict(self.sync.stats.unpaired) if self.sync else {}
        out = {t: n - self._unpaired_seen.get(t, 0) for t, n in now.items()}
        self._unpaired_seen = now
        return {t: n for t, n in out.items() if n > 0}

    def silent_failures(self, window: dict[str, int] | None = None,
                        unpaired: dict[str, int] | None = None) -> list[str]:
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
        out += self._input_failures(now, stalled)
        lost = self._inputs_lost(window or {}, unpaired or {})
        return out + ([lost] if lost else [])

    def _input_failures(self, now: float, stalled: float) -> list[str]:
        """No input since activation, inputs that stopped, or inputs that never pair up (one cause at most)."""
        topics = self.sync.topics if self.sync else []
        if self.activated_at is not None and self.last_input is None and now - self.activated_at > stalled:
            return [f"no input on {[self.resolve_topic_name(t) for t in topics]} for {now - self.activated_at:.0f}"
                    f" s since activation: check the topic names (remaps) and QoS (sub_reliability "
                    f"{self.c('sub_reliability')} must be offered by the publishers)"]
        if self.activated_at is not None and self.last_input is not None and now - self.last_input > stalled:
            return [f"inputs stopped {now - self.last_input:.0f} s ago"]
        if self.last_input is not None and (self.last_match is None or now - self.last_match > stalled):
            since = "yet" if self.last_match is None else f"for {now - self.last_match:.0f} s"
            return [f"no sync match {since} while inputs arrive: check the stamps of {topics} "
                    f"({self.c('sync_mode')} sync)"]
        return []

    @staticmethod
    def _inputs_lost(window: dict[str, int], unpaired: dict[str, int]) -> str:
        """Inputs lost on the way in the last period, with the usual fix: frames whose other inputs came while one
        topic's message never did (``unpaired``, from the synchronizer: every such frame, however few), or an input
        topic that delivered far fewer messages than another (``window``)."""
        most = max(window.values(), default=0)
        starved = [t for t, n in window.items() if most >= 3 and n < most / 2]
        parts = [f"{n} frame(s) without {t} (their other inputs came and went unpaired)"
                 for t, n in sorted(unpaired.items())]
        if starved:
            parts.append(f"{', '.join(f'{t} {window[t]}' for t in starved)} vs {most} messages on another input")
        if not parts:
            return ""
        profile = any(os.environ.get(v) for v in PROFILE_VARS)
        return (f"inputs lost on the way: {'; '.join(parts)} in the last period" + ("" if profile else
                "; large images over best-effort DDS need a Fast DDS profile (the launch file sets "
                "config/fastdds_large_messages.xml; give the camera driver the same)"))

    def _status_values(self, workers: int, pending: dict) -> dict[str, str]:
        """The key/values of the status: rates, latencies, sync figures, what runs, counters, fusion per object."""
        lat = sorted(self.latencies)
        stats = self.sync.stats if self.sync else None
        return {"workers": str(workers),
                "rate_hz": f"{rate_hz(list(self.done_times)):.2f}",
                "latency_p50_ms": f"{1e3 * lat[len(lat) // 2]:.1f}" if lat else "nan",
                "latency_max_ms": f"{1e3 * lat[-1]:.1f}" if lat else "nan",
                "network_ms": f"{np.median(self.network_ms):.1f}" if self.network_ms else "nan",
                "sync_dropped": str(sum(stats.dropped.values()) if stats else 0),
                "stamp_jumps": str(stats.jumps if stats else 0),
                "received": ", ".join(f"{k}={v}" for k, v in stats.received.items()) if stats else "",
                # per topic: frames whose other inputs came while this one's never did (lost before the node)
                "unpaired": ("n/a (counted with exact sync only)" if stats and self.sync.mode != "exact" else
                             ", ".join(f"{k}={v}" for k, v in stats.unpaired.items()) if stats else ""),
                # what runs: the configured values (a change waits for cleanup + configure: pending)
                "backend": str(self.c("backend")), "model": str(self.c("model")), "prompt": str(self.c("prompt")),
                "scale": str(self.c("scale")), "segmentation": str(self.c("segmentation")),
                "depth_units": "metres" if self.c("scale") != "relative" else "relative (up to scale, not metres)",
                "pending": ", ".join(f"{k}={v!r}" for k, v in pending.items()),
                "last_problem": self.last_problem, **{k: str(v) for k, v in self.counters.items()},
                **{f"object_{oid}_fusion": (", ".join(f"{k}={v}" for k, v in rep.items()) if rep else "left out")
                   for oid, rep in self.last_fusion.items()}}

    def _status_level(self, st: DiagnosticStatus, silent: list[str], pending: dict, pending_text: str,
                      workers: int) -> None:
        """OK; WARN naming the silent failures; pending changes appended; ERROR for a dead stage or no config."""
        st.level, st.message = DiagnosticStatus.OK, "ok"
        if silent:
            st.level, st.message = DiagnosticStatus.WARN, "; ".join(silent)[:400]
        if pending:
            st.message = f"{st.message}; pending until cleanup + configure: {pending_text}"[:400]
        active = self.state_label == "active"
        publishing = stage_running(self._publisher)
        if self.fatal or (active and self.activated_at is not None and not (workers and publishing)
                          and not self._stop.is_set()):
            st.level, st.message = DiagnosticStatus.ERROR, (self.fatal or "the worker is not running")[:400]
        if self.estimator is None:
            st.level, st.message = DiagnosticStatus.ERROR, "not configured"

    def _publish_diagnostics(self) -> None:
        """The node's status on /diagnostics (every diagnostics_period s, and when a stage dies)."""
        st = DiagnosticStatus(name=f"{self.get_name()}: object depth", hardware_id=str(self.c("backend")))
        workers = sum(th.name == "object_depth_worker" and th.is_alive() for th in threading.enumerate())
        pending = self.pending()
        values = self._status_values(workers, pending)
        silent = self.silent_failures(self._window(), self._unpaired_window())
        values.update(no_finite_frames=str(self.no_finite_streak),
                      sensor_coverage="n/a" if self.sensor_coverage is None else f"{self.sensor_coverage:.3f}",
                      seconds_since_match="never" if self.last_match is None else
                      f"{time.monotonic() - self.last_match:.1f}")
        self._status_level(st, silent, pending, values["pending"], workers)
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        self._send_status(st)

    def _publish_unconfigured(self) -> None:
        """While not configured, say so once a second on /diagnostics (ERROR), with the reason when there is one."""
        if self.estimator is not None:
            return
        text = f"configure failed: {self.configure_problem}" if self.configure_problem else "not configured"
        self._send_status(DiagnosticStatus(name=f"{self.get_name()}: object depth", level=DiagnosticStatus.ERROR,
                                           message=text[:800], hardware_id=str(self.p("backend"))))

    def _send_status(self, st: DiagnosticStatus) -> None:
        msg = DiagnosticArray(status=[st])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)
