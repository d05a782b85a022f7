"""Run by bench.py in a fresh process: configure object_depth_node with one backend, run one frame, report
start-up time (process start -> configured) and resident memory (VmRSS / VmHWM) as one JSON line.

argv: backend (torch | onnxruntime | auto: the shipped graph where it applies) [exported graph for onnxruntime].
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

T0 = time.perf_counter()


def rss_mib() -> dict[str, float]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def main(backend: str, onnx: str = "") -> None:
    import numpy as np
    import rclpy
    from rclpy.parameter import Parameter

    from bgprompt_ros.node import ObjectDepthNode

    rclpy.init()
    overrides = [Parameter("backend", value=backend)] + ([Parameter("onnx", value=onnx)] if onnx else [])
    node = ObjectDepthNode(parameter_overrides=overrides)
    node.trigger_configure()
    configured = time.perf_counter() - T0
    img = np.full((480, 640, 3), 200, np.uint8)
    mask = np.zeros((480, 640), np.uint8)
    mask[140:340, 220:420] = 1
    K = np.array([[520.0, 0, 319.5], [0, 520.0, 239.5], [0, 0, 1]])
    node.estimator.estimate(img, K, mask)
    print(json.dumps({"backend": backend, "configured_s": configured, **rss_mib(),
                      "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
