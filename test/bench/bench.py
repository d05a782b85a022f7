"""``make bench`` (python test/bench/bench.py): throughput and overhead figures measured in ONE run, printed as ratios.

Timing goals live here, not in tests: render rates (GL >= 30 objects/s at 256 px, numpy >= 8/s at
128 px), estimator overhead beside the network (<= 10% of `mini`'s network time at 640x480), onnxruntime
vs torch for `mini`, point-cloud building vs a sensor_msgs_py-style per-point construction (>= 10x), and
the ROS node's end-to-end latency against the network's own forward time (<= 15% overhead).
"""
from __future__ import annotations

import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _timeit(fn, repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_render(report: list[str]) -> None:
    from bgprompt_training.render.generate import Generator, RenderConfig

    for backend, size, goal in (("gl", 256, 30.0), ("numpy", 128, 8.0)):
        try:
            gen = Generator(RenderConfig(size=size, seed=0), backend)
        except RuntimeError as exc:
            report.append(f"render {backend}: unavailable ({exc})")
            continue
        gen.sample(0)
        n = 40 if backend == "gl" else 16
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            gen.sample(i)
        rate = n / (time.perf_counter() - t0)
        report.append(f"render objects, {backend} backend, {size}px: {rate:.1f}/s (goal >= {goal:.0f}/s: "
                      f"{'met' if rate >= goal else 'NOT met'})")


def _frame(n_objects: int, h: int = 480, w: int = 640):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    labels = np.zeros((h, w), np.uint16)
    for k in range(n_objects):
        y, x = 40 + 80 * (k % 5), 40 + 110 * k % (w - 120)
        labels[y:y + 70, x:x + 100] = k + 1
    K = np.array([[520.0, 0, 319.5], [0, 520.0, 239.5], [0, 0, 1]])
    return img, labels, K


def bench_estimator(report: list[str]) -> None:
    from bgprompt_core.estimator import EstimatorConfig, ObjectDepthEstimator

    est = ObjectDepthEstimator(EstimatorConfig(model="mini"))
    S = est.size
    for n in (1, 5):
        img, labels, K = _frame(n)
        # overhead per call = wall time - the network time the estimator measured inside that same call,
        # so that the network's own run-to-run noise (a few ms here) does not land in the overhead
        stats = {False: [], True: []}
        for with_points in (False, True):
            for i in range(12):
                t0 = time.perf_counter()
                res = est.estimate(img, K, labels)
                if with_points:
                    res.points
                if i >= 2:
                    stats[with_points].append((time.perf_counter() - t0, res.timing_ms["network"] / 1e3))
        total = statistics.median(wall for wall, _ in stats[False])
        net = statistics.median(network for _, network in stats[False])
        over = statistics.median(wall - network for wall, network in stats[False])
        over_pts = statistics.median(wall - network for wall, network in stats[True])
        report.append(f"estimator 640x480, {n} object(s): total {1e3 * total:.1f} ms, network {1e3 * net:.1f} ms, "
                      f"pipeline overhead {1e3 * over:.1f} ms = {100 * over / net:.0f}% of the network (goal <= 10%); "
                      f"with the organized points {1e3 * over_pts:.1f} ms = {100 * over_pts / net:.0f}%")
    from bgprompt_core.backends import OnnxRuntimeBackend
    from bgprompt_core.runtime import onnx_for

    with tempfile.TemporaryDirectory() as tmp:
        cfg = EstimatorConfig(model="mini", backend="onnxruntime", cache_dir=tmp)
        ort = OnnxRuntimeBackend(onnx_for(est.model, cfg, S[0]))
        for n in (1, 5):
            x = np.random.rand(n, 3, *S).astype(np.float32)
            m = np.ones((n, 1, *S), np.float32)
            t_torch = _timeit(lambda: est.backend.run(x, m), 5)
            t_ort = _timeit(lambda: ort.run(x, m), 5)
            report.append(f"mini batch {n}: torch {1e3 * t_torch:.1f} ms, onnxruntime {1e3 * t_ort:.1f} ms "
                          f"(onnxruntime {t_torch / t_ort:.2f}x torch's speed)")


def bench_cloud(report: list[str]) -> None:
    from bgprompt_ros.conversions import cloud_data

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 2.0, (480, 640)).astype(np.float32)
    K = np.array([[520.0, 0, 319.5], [0, 520.0, 239.5], [0, 0, 1]])
    rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    v, u = np.mgrid[0:480, 0:640]
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)

    def per_point():
        out = bytearray()
        for p, c in zip(pts.reshape(-1, 3), rgb.reshape(-1, 3)):
            packed = struct.unpack("<f", struct.pack("<I", (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2])))[0]
            out += struct.pack("<fffxxxxfxxxxxxxxxxxx", p[0], p[1], p[2], packed)
        return out

    fast = _timeit(lambda: cloud_data(depth, K, rgb), 5)
    slow = _timeit(per_point, 1, warmup=0)
    report.append(f"organized 640x480 cloud with rgb from depth: numpy {1e3 * fast:.1f} ms vs per-point "
                  f"{1e3 * slow:.0f} ms = {slow / fast:.0f}x faster (goal >= 10x)")


def bench_node(report: list[str], frames: int = 40) -> None:
    """Node end-to-end: image published -> cloud received, 640x480, one object, `mini` on the torch backend."""
    try:
        import rclpy  # noqa: F401
    except ImportError:
        report.append("node latency: rclpy not available")
        return
    script = Path(__file__).with_name("bench_node_client.py")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    for mode in ("organized", "dense"):
        out = subprocess.run([sys.executable, str(script), str(frames), mode], env=env, capture_output=True,
                             text=True, timeout=600)
        if out.returncode != 0:
            report.append(f"node latency ({mode}): failed "
                          f"({out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode})")
            continue
        report.append(out.stdout.strip().splitlines()[-1])


def bench_soak(report: list[str], frames: int = 2000) -> None:
    """2000 frames through the live node, one at a time: RSS growth (goal < 5%) and the node's counters."""
    script = Path(__file__).with_name("bench_node_client.py")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    out = subprocess.run([sys.executable, str(script), str(frames), "dense", "soak"], env=env, capture_output=True,
                         text=True, timeout=3600)
    report.append(out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else
                  f"soak: failed ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})")


def main() -> int:
    report: list[str] = []
    for fn in (bench_render, bench_estimator, bench_cloud, bench_node, bench_soak):
        fn(report)
        print(report[-1] if report else "", flush=True)
    print("\n== bench summary (one run, this machine) ==")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
