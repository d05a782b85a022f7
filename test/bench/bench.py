"""``make bench`` (python test/bench/bench.py): throughput and overhead figures measured in ONE run, printed as ratios.

Timing goals live here, not in tests: render rates (GL >= 30 objects/s at 256 px, numpy >= 8/s at 128 px),
estimator overhead beside the network (<= 10% of `mini`'s network time at 640x480), onnxruntime vs torch for
`mini`, point-cloud building (<= 3x a memcpy of the same bytes; >= 10x a per-point construction), the node's
start-up and memory on an exported graph vs torch (RSS <= 1/3), the same for a fresh torch-free venv
(`pip install ".[robot,ros]"`) on the shipped graph, the node's end-to-end latency against its floor
(<= 1.25 x (a bare rclpy relay's p50 + the network's forward), both cloud modes) and a 2000-frame soak.
The estimator and distributed-training overheads and the node's ratio to its floor are medians with their
interquartile range over interleaved repeats (BENCH_REPEATS, default 5; BENCH_DIST_REPEATS, default 3;
BENCH_NODE_REPEATS, default 3), judged on the median, and say when the IQR straddles the goal.
"""
from __future__ import annotations

import json
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


REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))  # interleaved rounds behind each figure with a spread
DIST_REPEATS = int(os.environ.get("BENCH_DIST_REPEATS", "3"))  # training runs are ~1 min each: fewer pairs
NODE_REPEATS = int(os.environ.get("BENCH_NODE_REPEATS", "3"))  # relay + node runs are ~1 min per pair


def _spread(values) -> str:
    """Median and interquartile range of ratios, as percentages: "8.1% (IQR 7.6-8.9%, n=30)"."""
    q1, med, q3 = np.percentile(np.asarray(values, float) * 100, [25, 50, 75])
    return f"{med:.1f}% (IQR {q1:.1f}-{q3:.1f}%, n={len(values)})"


def _ratio_spread(values) -> str:
    """Median and interquartile range of ratios: "1.08x (IQR 1.02-1.15x, n=3)"."""
    q1, med, q3 = np.percentile(np.asarray(values, float), [25, 50, 75])
    return f"{med:.2f}x (IQR {q1:.2f}-{q3:.2f}x, n={len(values)})"


def _verdict(values, goal: float) -> str:
    """Judged on the median; says so when the interquartile range straddles the goal (then one run may say
    either)."""
    q1, med, q3 = np.percentile(np.asarray(values, float), [25, 50, 75])
    verdict = "met" if med <= goal else "NOT met"
    return verdict + (" at the median; the IQR straddles the goal" if q1 <= goal < q3 else "")


def _have_rclpy(report: list[str], what: str) -> bool:
    import importlib.util

    if importlib.util.find_spec("rclpy") is None:
        report.append(f"{what}: rclpy not available")
        return False
    return True


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


def bench_estimator(report: list[str], rounds: int = REPEATS, calls: int = 6) -> None:
    """Estimator overhead beside the network (goal <= 10% for 1 and 5 objects, the chosen upsampling included),
    on the torch and the onnxruntime backend, with and without the organized points, and the cost of the joint
    bilateral upsampling over the bilinear one it replaced (issue 29). Every configuration runs ``calls`` times in
    each of ``rounds`` interleaved rounds; figures are the median and IQR over all calls."""
    from bgprompt_core.runtime.onnxruntime_backend import OnnxRuntimeBackend
    from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator
    from bgprompt_core.runtime.build import onnx_for

    est = ObjectDepthEstimator(EstimatorConfig(model="mini"))
    S = est.size
    with tempfile.TemporaryDirectory() as tmp:
        ort = OnnxRuntimeBackend(onnx_for(est.model, EstimatorConfig(model="mini", backend="onnxruntime",
                                                                     cache_dir=tmp), S[0]))
    backends = {"torch": (est.backend, est.model), "onnxruntime": (ort, None)}
    estimators = {(b, up): ObjectDepthEstimator(EstimatorConfig(model="mini", upsample=up), backend=backend,
                                                spec=est.spec, model=model)
                  for b, (backend, model) in backends.items() for up in ("joint-bilateral", "bilinear")}
    frames = {n: _frame(n) for n in (1, 5)}
    configs = [(b, n, up, pts) for b in backends for n in frames for up in ("joint-bilateral", "bilinear")
               for pts in (False, True)]
    # per call: overhead = wall time - the network time the estimator measured inside that same call, so that the
    # network's own run-to-run noise does not land in the overhead; ratios to that call's network time
    samples: dict[tuple, list[tuple[float, float]]] = {c: [] for c in configs}
    for b, n, up, _ in configs:  # warm-up
        img, labels, K = frames[n]
        estimators[b, up].estimate(img, K, labels)
    for _ in range(rounds):
        for c in configs:
            b, n, up, pts = c
            img, labels, K = frames[n]
            for _ in range(calls):
                t0 = time.perf_counter()
                res = estimators[b, up].estimate(img, K, labels)
                if pts:
                    res.points
                wall = time.perf_counter() - t0
                samples[c].append((wall - res.timing_ms["network"] / 1e3, res.timing_ms["network"] / 1e3))
    ratios = {c: [o / net for o, net in samples[c]] for c in configs}
    for b in backends:
        for n in frames:
            base = samples[(b, n, "joint-bilateral", False)]
            net = statistics.median(x for _, x in base)
            over = statistics.median(o for o, _ in base)
            extra = [a[0] - c[0] for a, c in zip(base, samples[(b, n, "bilinear", False)])]  # paired in time
            chosen = ratios[(b, n, "joint-bilateral", False)]
            report.append(
                f"estimator 640x480, {n} object(s), {b}: network {1e3 * net:.1f} ms, pipeline overhead "
                f"{1e3 * over:.2f} ms = {_spread(chosen)} of the network (goal <= 10%: {_verdict(chosen, 0.10)}); "
                f"with the organized points {_spread(ratios[(b, n, 'joint-bilateral', True)])}; the joint bilateral "
                f"upsampling costs {1e3 * statistics.median(extra):+.2f} ms over bilinear ({rounds} interleaved "
                f"rounds x {calls} calls)")
    for n in (1, 5):
        x = np.random.rand(n, 3, *S).astype(np.float32)
        m = np.ones((n, 1, *S), np.float32)
        t_torch = _timeit(lambda: est.backend.run(x, m), 5)
        t_ort = _timeit(lambda: ort.run(x, m), 5)
        report.append(f"mini batch {n}: torch {1e3 * t_torch:.1f} ms, onnxruntime {1e3 * t_ort:.1f} ms "
                      f"(onnxruntime {t_torch / t_ort:.2f}x torch's speed)")


def bench_cloud(report: list[str]) -> None:
    """Organized 640x480 xyz+rgb cloud (9.8 MB) against a memcpy of the same bytes (goal <= 3x), a
    sensor_msgs_py.create_cloud-style build fed numpy (structured array + tobytes: what create_cloud does with
    numpy input; sensor_msgs_py itself does not install here) and a per-point struct.pack loop (goal >= 10x)."""
    from numpy.lib.recfunctions import unstructured_to_structured

    from bgprompt_ros.conversions import cloud_data, pack_rgb

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 2.0, (480, 640)).astype(np.float32)
    K = np.array([[520.0, 0, 319.5], [0, 520.0, 239.5], [0, 0, 1]])
    rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    v, u = np.mgrid[0:480, 0:640]
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)
    dtype = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4"] * 4, "offsets": [0, 4, 8, 16],
                      "itemsize": 32})

    def create_cloud_style():
        xyzrgb = np.concatenate([pts.astype(np.float32), pack_rgb(rgb)[..., None]], -1).reshape(-1, 4)
        return unstructured_to_structured(xyzrgb, dtype=dtype).tobytes()

    def per_point():
        out = bytearray()
        for p, c in zip(pts.reshape(-1, 3), rgb.reshape(-1, 3)):
            packed = struct.unpack("<f", struct.pack("<I", (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2])))[0]
            out += struct.pack("<fffxxxxfxxxxxxxxxxxx", p[0], p[1], p[2], packed)
        return out

    src = np.ones(480 * 640 * 32, np.uint8)
    memcpy = _timeit(lambda: src.copy(), 20)
    fast = _timeit(lambda: cloud_data(depth, K, rgb, organized=True), 20)
    style = _timeit(create_cloud_style, 5)
    slow = _timeit(per_point, 1, warmup=0)
    report.append(f"organized 640x480 cloud with rgb (9.8 MB): {1e3 * fast:.2f} ms = {fast / memcpy:.1f}x a memcpy of "
                  f"the same bytes ({1e3 * memcpy:.2f} ms; goal <= 3x: {'met' if fast <= 3 * memcpy else 'NOT met'}); "
                  f"create_cloud-style numpy {1e3 * style:.1f} ms ({style / fast:.1f}x slower); per-point "
                  f"{1e3 * slow:.0f} ms = {slow / fast:.0f}x slower (goal >= 10x)")


def bench_startup(report: list[str]) -> None:
    """The node's start-up and memory with torch vs an exported graph on onnxruntime (no torch, no transformers).
    Goal: onnxruntime RSS <= 1/3 of torch's."""
    if not _have_rclpy(report, "node start-up"):
        return
    from bgprompt_core.frame.estimator import EstimatorConfig
    from bgprompt_core.runtime.export import export_onnx
    from bgprompt_core.runtime.build import build_model

    script = Path(__file__).with_name("bench_startup.py")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    with tempfile.TemporaryDirectory() as tmp:
        graph = export_onnx(build_model(EstimatorConfig(model="mini")), Path(tmp) / "mini-1bg.onnx", 128)
        runs = {}
        for backend, args in (("torch", []), ("onnxruntime", [str(graph)])):
            out = subprocess.run([sys.executable, str(script), backend, *args], env=env, capture_output=True,
                                 text=True, timeout=600)
            if out.returncode != 0:
                report.append(f"node start-up ({backend}): failed ({out.stderr.strip().splitlines()[-1:]})")
                return
            runs[backend] = json.loads(out.stdout.strip().splitlines()[-1])
    t, o = runs["torch"], runs["onnxruntime"]
    ratio = o["VmHWM"] / t["VmHWM"]
    report.append(f"node start-up to configured + one 640x480 frame: torch {t['configured_s']:.1f} s, RSS peak "
                  f"{t['VmHWM']:.0f} MiB; onnxruntime graph {o['configured_s']:.1f} s, RSS peak {o['VmHWM']:.0f} MiB "
                  f"(torch imported: {o['torch']}, transformers: {o['transformers']}) = {ratio:.2f} of torch's "
                  f"(goal <= 0.33: {'met' if ratio <= 1 / 3 else 'NOT met'}); start-up {t['configured_s'] / o['configured_s']:.1f}x faster")


def bench_robot_venv(report: list[str]) -> None:
    """The torch-free robot install, built as users build it (test/install_envs.robot_venv: a fresh venv,
    `pip install ".[robot,ros]"`, no torch / transformers / scipy), runs the node with default parameters (the
    shipped graph on onnxruntime): start-up (process start -> configured + one 640x480 frame) and peak RSS,
    against this venv's node on backend torch in the same run."""
    if not _have_rclpy(report, "robot venv start-up"):
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from install_envs import clean_env, robot_venv

    script = Path(__file__).with_name("bench_startup.py")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        python = robot_venv(Path(tmp) / "venv")
        for label, py, backend, env in (
                ("robot", python, "auto", clean_env(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", HOME=tmp)),
                ("torch", sys.executable, "torch", {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})):
            out = subprocess.run([str(py), str(script), backend], env=env, capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                report.append(f"robot venv start-up ({label}): failed ({out.stderr.strip().splitlines()[-1:]})")
                return
            runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
    r, t = runs["robot"], runs["torch"]
    report.append(f"torch-free robot venv (pip install .[robot,ros], shipped mini-1bg graph): start-up to configured "
                  f"+ one 640x480 frame {r['configured_s']:.1f} s, RSS peak {r['VmHWM']:.0f} MiB (torch imported: "
                  f"{r['torch']}); the dev venv on torch {t['configured_s']:.1f} s, {t['VmHWM']:.0f} MiB: "
                  f"{t['configured_s'] / r['configured_s']:.1f}x faster start, RSS {r['VmHWM'] / t['VmHWM']:.2f} of "
                  f"torch's (goal <= 0.33: {'met' if r['VmHWM'] <= t['VmHWM'] / 3 else 'NOT met'})")


def bench_distributed(report: list[str], steps: int = 40, rounds: int = DIST_REPEATS) -> None:
    """Prompt training step time: plain vs under torchrun at world size 1 (the wrapper's overhead, goal <= 5%)
    and on 2 processes (scaling on this 2-core machine). `mini` at 128 px, global batch 8, gloo on loopback.
    The overhead is a paired ratio (world size 1 over the plain run just before it), ``rounds`` times
    interleaved: median and IQR, so that one noisy run does not make the figure."""
    import socket

    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "objs"
        subprocess.run([str(bindir / "bgprompt"), "render", "objects", "--out", str(data), "--count", "32", "--size",
                        "128", "--seed", "5"], check=True, capture_output=True)
        runs = 0

        def step_seconds(kind_args: list[str], launcher: int | None) -> float:
            nonlocal runs
            runs += 1
            out = Path(tmp) / f"run{runs}"
            args = ["train", "--model", "mini", "--data", str(data), "--out", str(out), "--steps", str(steps),
                    "--batch", "8", "--val-every", str(10 * steps), "--local-only", *kind_args]
            if launcher:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                cmd = [str(bindir / "torchrun"), "--nnodes", "1", "--nproc_per_node", str(launcher),
                       "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "bgprompt_training", *args]
            else:
                cmd = [str(bindir / "bgprompt"), *args]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if run.returncode != 0:
                raise RuntimeError(run.stderr.strip()[-300:])
            timing = json.loads((Path(str(out) + ".state") / "timing.json").read_text())
            return timing["seconds"] / timing["steps"]

        for kind, extra in (("1bg", []), ("pnet", ["--prompt", "pnet"])):
            try:
                step_seconds(extra, None)  # warm caches for every launcher
                pairs = [(step_seconds(extra, None), step_seconds(extra, 1)) for _ in range(rounds)]
                two = step_seconds(extra, 2)
            except RuntimeError as exc:
                report.append(f"distributed training ({kind}): failed ({exc})")
                return
            plain = statistics.median(p for p, _ in pairs)
            one = statistics.median(o for _, o in pairs)
            over = [o / p - 1 for p, o in pairs]
            report.append(f"training {kind} (mini, global batch 8): step {1e3 * plain:.0f} ms plain, "
                          f"{1e3 * one:.0f} ms under torchrun at world size 1: overhead {_spread(over)} over "
                          f"{rounds} interleaved pairs (goal <= 5%: {_verdict(over, 0.05)}); 2 processes "
                          f"{1e3 * two:.0f} ms = {plain / two:.2f}x the plain speed on this 2-core machine")


def bench_node(report: list[str], frames: int = 40, rounds: int = NODE_REPEATS) -> None:
    """Node end-to-end (image published -> cloud received, 640x480, one object, `mini`, default backend) against
    its floor measured in the same run: a bare rclpy relay with the same inputs and output sizes (bench_relay.py)
    plus the network's standalone forward time. Goal: node p50 <= 1.25 x (relay p50 + forward), both cloud modes.
    ``rounds`` interleaved relay / node pairs per mode: each pair's ratio, then the median and IQR over the pairs
    (judged on the median), so that one run on a loaded machine does not make the figure."""
    if not _have_rclpy(report, "node latency"):
        return
    script = Path(__file__).with_name("bench_node_client.py")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    for mode in ("organized", "dense"):
        pairs = []
        for r in range(rounds):
            results = {}
            for target in ("relay", "node"):
                out = subprocess.run([sys.executable, str(script), str(frames), mode, "-", target], env=env,
                                     capture_output=True, text=True, timeout=600)
                lines = out.stdout.strip().splitlines()
                if out.returncode != 0 or not lines or not lines[-1].startswith("RESULT "):
                    report.append(f"{target} latency ({mode}): failed "
                                  f"({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})")
                    break
                if r == 0:
                    report.append(lines[-2])
                print(f"[{mode} {r + 1}/{rounds}] {lines[-2]}", flush=True)
                results[target] = json.loads(lines[-1][len("RESULT "):])
            if len(results) < 2:
                break
            pairs.append((results["node"]["p50"], results["relay"]["p50"], results["node"]["forward"]))
        if pairs:
            ratios = [node / (relay + fwd) for node, relay, fwd in pairs]
            node, relay, fwd = (statistics.median(x[k] for x in pairs) for k in range(3))
            report.append(f"node vs its floor ({mode} cloud): p50 {1e3 * node:.1f} ms vs relay {1e3 * relay:.1f} ms + "
                          f"forward {1e3 * fwd:.1f} ms (medians) = {_ratio_spread(ratios)} the floor over "
                          f"{len(pairs)} interleaved pairs (goal <= 1.25x: {_verdict(ratios, 1.25)})")


def bench_flood(report: list[str], frames: int = 90) -> None:
    """30 Hz of 640x480 frames into the node under its defaults, without and with the launch file's Fast DDS profile:
    frames lost anywhere are counted, and the node's diagnostics must name them (bench_flood.py)."""
    if not _have_rclpy(report, "flood"):
        return
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    for case in ("none", "profile"):
        out = subprocess.run([sys.executable, str(Path(__file__).with_name("bench_flood.py")), str(frames), case],
                             env=env, capture_output=True, text=True, timeout=600)
        why = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode
        report.append(out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else
                      f"flood ({case}): failed ({why})")
        print(report[-1], flush=True)


def bench_soak(report: list[str], frames: int = 2000) -> None:
    """2000 frames through the live node, one at a time: RSS growth (goal < 5%) and the node's counters."""
    script = Path(__file__).with_name("bench_node_client.py")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    out = subprocess.run([sys.executable, str(script), str(frames), "dense", "soak"], env=env, capture_output=True,
                         text=True, timeout=3600)
    report.append(out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else
                  f"soak: failed ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})")


def main() -> int:
    """``bench.py [NAME ...]``: every bench, or only those named (render, estimator, node, flood, ...)."""
    report: list[str] = []
    benches = (bench_render, bench_estimator, bench_cloud, bench_startup, bench_robot_venv, bench_distributed,
               bench_node, bench_flood, bench_soak)
    wanted = sys.argv[1:]
    unknown = set(wanted) - {fn.__name__[len("bench_"):] for fn in benches}
    if unknown:
        print(f"unknown benches {sorted(unknown)}; known: {[fn.__name__[len('bench_'):] for fn in benches]}")
        return 2
    for fn in benches:
        if wanted and fn.__name__[len("bench_"):] not in wanted:
            continue
        fn(report)
        print(report[-1] if report else "", flush=True)
    print("\n== bench summary (one run, this machine) ==")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
