"""``make demo``: the main job on the embedded default, offline, in a few minutes.

1. render a small set of held-out objects (a seed no training used);
2. evaluate `mini` with the white background, noise, the shipped 1-BG and PNet prompts and the
   references (flat, oracle-shift) -> demo/report.md with the table and Figure 5/6 style PNGs;
3. the robot's loop (``demo_loop``): a bag of tabletop frames with a simulated RGB-D sensor, a 1-BG prompt trained
   on it by the sensor alone (a few steps);
4. object clouds in metres: a few held-out tabletop frames with a simulated RGB-D sensor, `eval-grasp`, the
   bag-trained prompt beside the shipped ones;
5. live ROS 2: a synthetic bag (`bgprompt bag make`) is replayed (`bag play`) into the running
   object_depth_node, which runs the bag-trained prompt; inputs and outputs are recorded (`bag record`), and
   `bag eval` measures the recording.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .demo_loop import bag_loop_step, one_line_tail


def _run(cmd: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _await_line(proc: subprocess.Popen, line: str, timeout: float) -> str | None:
    """Read ``proc``'s stdout until ``line`` (None) or the deadline / its exit (the reason)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    seen = []
    while (left := end - time.monotonic()) > 0:
        if not sel.select(timeout=left):
            continue
        got = proc.stdout.readline()
        if not got:
            return f"it exited with status {proc.wait()} before saying {line!r}: {one_line_tail(''.join(seen))}"
        if got.strip() == line:
            return None
        seen.append(got)
    return f"it did not say {line!r} within {timeout:.0f} s"


LIVE_LINE = "live node: {served}/{frames} input frames went through the live node"


def live_ros_step(out: Path, data: Path, frames: int = 8, ready_timeout: float = 180.0,
                  prompt: str = "1bg") -> list[str]:
    """node + bag record + bag play, each started on a readiness signal, then bag eval on the recording.

    Order: the node starts; the recorder waits until the node's output publishers match its subscriptions
    and prints 'bag record: ready'; `bag play --wait-node` waits until the node is lifecycle-active and the
    node and the recorder match its publishers. Returns report lines; the first states how many frames went
    through the live node (``LIVE_LINE``), with the shortfall named when some did not. ``prompt``: the node's
    prompt parameter (a checkpoint is exported to an ONNX graph under out/engine_cache at the node's start).
    """
    import importlib.util
    import shutil

    if importlib.util.find_spec("rclpy") is None:
        return ["- not run: rclpy is not installed"]
    exe = Path(sys.executable).parent
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOG_DIR": str(out / "ros_log")}
    bag_in, bag_rec = out / "synthetic_bag", out / "recorded_bag"
    for b in (bag_in, bag_rec):
        if b.exists():
            shutil.rmtree(b)
    made = _run([str(exe / "bgprompt"), "bag", "make", "--data", str(data), "--out", str(bag_in),
                 "--limit", str(frames)], env)
    if made.returncode != 0:
        return [LIVE_LINE.format(served=0, frames=frames) + f" (bag make failed: {one_line_tail(made.stderr)})"]
    # "topics: image=/camera/..., camera_info=..." (the demo talks to the ROS layer through its commands only)
    TOPICS = dict(kv.split("=") for kv in made.stdout.split("topics:")[1].strip().split(", "))
    outputs = {"/object_points": "PointCloud2", "/object_depth/image": "Image"}
    node, rec = _start_node_and_recorder(out, exe, env, TOPICS, outputs, bag_rec, frames, ready_timeout, prompt)
    problems: list[str] = []
    t0 = time.monotonic()
    try:
        play_note = _play_when_ready(rec, exe, env, bag_in, frames, ready_timeout, problems)
    finally:
        _stop(node, rec, problems)
    elapsed = time.monotonic() - t0
    record_log = (out / "record.log").read_text()
    if rec.returncode not in (0, None) and "incomplete" in record_log:
        problems.append(f"`bag record`: {one_line_tail(record_log)}")
    counts = _recorded_counts(bag_rec)
    served = min([counts.get(t, 0) for t in outputs] + [frames])
    lines = [LIVE_LINE.format(served=served, frames=frames) + ("" if served == frames else " (SHORTFALL)"), ""]
    lines += [f"- shortfall: {p}" for p in problems]
    return lines + _live_report(out, exe, env, bag_rec, play_note, elapsed, counts, TOPICS, prompt)


def _start_node_and_recorder(out: Path, exe: Path, env: dict, TOPICS: dict, outputs: dict, bag_rec: Path,
                             frames: int, ready_timeout: float, prompt: str
                             ) -> tuple[subprocess.Popen, subprocess.Popen]:
    """The node on the bag's topics, with ``prompt``, and `bag record` of its inputs and outputs (waiting for the
    node)."""
    params = out / "node_params.yaml"
    params.write_text(f"/**:\n  ros__parameters:\n    sub_reliability: reliable\n    queue_size: 30\n"
                      f"    prompt: '{prompt}'\n    engine_cache_dir: '{out.resolve() / 'engine_cache'}'\n"
                      + ("" if prompt == "1bg" else "    recenter: true\n"))  # bag prompts learn re-centred crops
    remap = sum((["-r", f"{k}:={TOPICS[k]}"] for k in ("image", "camera_info", "mask")), [])
    topics = [f"{TOPICS[k]}:sensor_msgs/msg/{'CameraInfo' if k == 'camera_info' else 'Image'}" for k in TOPICS]
    topics += [f"{t}:sensor_msgs/msg/{m}" for t, m in outputs.items()]
    expect = [f"{TOPICS[k]}={frames}" for k in TOPICS] + [f"{t}={frames}" for t in outputs]
    wait = ["--wait-timeout", str(ready_timeout)]
    node = subprocess.Popen([str(exe / "object_depth_node"), "--ros-args", "--params-file", str(params), *remap],
                            env=env, stdout=open(out / "node.log", "w"), stderr=subprocess.STDOUT)
    rec = subprocess.Popen([str(exe / "bgprompt"), "bag", "record", "--out", str(bag_rec), "--topics", *topics,
                            "--expect", *expect, "--duration", str(ready_timeout), "--wait-node", "object_depth", *wait],
                           env=env, stdout=subprocess.PIPE, stderr=open(out / "record.log", "w"), text=True)
    return node, rec


def _play_when_ready(rec: subprocess.Popen, exe: Path, env: dict, bag_in: Path, frames: int, ready_timeout: float,
                     problems: list[str]) -> str:
    """`bag play` once the recorder says it is ready, then the recorder's own end; problems are appended."""
    wait = ["--wait-timeout", str(ready_timeout)]
    play_note = ""
    not_ready = _await_line(rec, "bag record: ready", ready_timeout + 30)
    if not_ready:
        problems.append(f"`bag record` was not ready: {not_ready} (see record.log, node.log)")
        return play_note
    play = _run([str(exe / "bgprompt"), "bag", "play", str(bag_in), "--rate", "0.5",
                 "--wait-node", "object_depth", "--wait-node", "bgprompt_bag_record", *wait],
                env, timeout=ready_timeout + 300)
    if play.returncode != 0:
        problems.append(f"`bag play` failed: {one_line_tail(play.stderr)}")
    else:
        play_note = f"`bag play` published {play.stdout.split()[1]} messages of {frames} frames"
    try:
        rec.wait(timeout=ready_timeout + 60)
    except subprocess.TimeoutExpired:
        problems.append("`bag record` did not stop by its own deadline")
    return play_note


def _stop(node: subprocess.Popen, rec: subprocess.Popen, problems: list[str]) -> None:
    """SIGINT the node (killed after 30 s) and the recorder when it still runs."""
    node.send_signal(2)
    try:
        node.wait(timeout=30)
    except subprocess.TimeoutExpired:
        node.kill()
        problems.append("the node did not exit within 30 s of SIGINT")
    if rec.poll() is None:
        rec.send_signal(2)
        rec.wait(timeout=30)


def _recorded_counts(bag_rec: Path) -> dict[str, int]:
    """Messages per topic in the recording (none when it was not written)."""
    counts: dict[str, int] = {}
    if (bag_rec / "metadata.yaml").is_file():
        from rosbags.highlevel import AnyReader

        with AnyReader([bag_rec]) as reader:
            counts = {c.topic: c.msgcount for c in reader.connections}
    return counts


def _live_report(out: Path, exe: Path, env: dict, bag_rec: Path, play_note: str, elapsed: float,
                 counts: dict[str, int], TOPICS: dict, prompt: str) -> list[str]:
    """The live step's report lines after the first: what was played and recorded, and `bag eval` of it."""
    lines: list[str] = []
    if play_note:
        lines.append(f"- {play_note} into the running node in {elapsed:.0f} s (node log: node.log)")
    if counts:
        lines.append("- `bag record` captured: " + ", ".join(f"{t} x{n}" for t, n in sorted(counts.items())))
    if not counts.get(TOPICS["depth"]):
        return lines
    ev = _run([str(exe / "bgprompt"), "bag", "eval", str(bag_rec), "--model", "mini", "--prompt", prompt,
               "--out", str(out / "bag_eval")], env, timeout=600)
    if ev.returncode != 0:
        return lines + [f"- `bag eval` failed: {one_line_tail(ev.stderr)}"]
    return lines + ["- `bag eval` on the recording (its RGB-D-like depth as reference):", "",
                    (out / "bag_eval" / "summary.md").read_text()]


def grasp_step(out: Path, frames: int = 8, extra_prompts: tuple[str, ...] = ()) -> list[str]:
    """Object clouds in metres from a simulated RGB-D sensor on a few held-out tabletop frames (eval-grasp), the
    shipped prompts and ``extra_prompts`` (checkpoints)."""
    from bgprompt_core.runtime.build import SHIPPED_PROMPTS

    from .grasp import (DEFAULT_PARAMS, GraspEvalConfig, evaluate_grasp, goal_lines, markdown, merge_results,
                        write_report)
    from .render.generate import RenderConfig
    from .render.store import render_dataset

    data = out / "tabletop"
    if not (data / "manifest.json").is_file():
        render_dataset(RenderConfig(kind="tabletop", size=256, seed=901, families=("primitive", "superquadric", "lathe")),
                       data, frames, progress=False)
    shipped = ("tabletop",) if SHIPPED_PROMPTS["mini"]["tabletop"].is_file() else ()
    prompts = ("none", "1bg") + shipped + extra_prompts
    cfg = GraspEvalConfig.from_params_file(DEFAULT_PARAMS, prompts=prompts, min_pixels=100, sensors=("d435-like",),
                                           bootstrap=200)
    result = merge_results([evaluate_grasp(data, cfg, progress=False, keep_clouds=1)], cfg)
    write_report(result, out / "grasp", cfg, str(DEFAULT_PARAMS))
    set_, sensor = result["sets"][0], result["rows"][0]["sensor"] if result["rows"] else "d435-like"
    frames = sum(result["frames"].values())
    return [f"{frames} held-out tabletop frames (seed 901), a d435-like simulated sensor; per material, "
            f"medians over whole objects (full report with figures: grasp/summary.md; `make grasp` for the "
            f"150-frame evaluation in docs/grasp/).", "", markdown(result["summary"], set_, sensor), "",
            *goal_lines(result["goals"], set_, sensor)]


def run_demo(out: Path, count: int = 48) -> int:
    from bgprompt_core.runtime.build import PACKAGE_PROMPTS

    from .eval import evaluate, markdown_table
    from .render.generate import RenderConfig
    from .render.store import render_dataset

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = out / "held_out_objects"
    if not (data / "manifest.json").is_file():
        render_dataset(RenderConfig(size=128, seed=900, families=("primitive", "superquadric", "lathe")), data, count)
    prompts = [str(p) for p in sorted(PACKAGE_PROMPTS.glob("mini-*.safetensors"))]
    rows = evaluate("mini", [str(data)], prompts=prompts, backgrounds=["white", "noise"], count=count,
                    local_only=True, figures=out / "figures", figure_count=3, eq2_variants=False)
    t_eval = time.time() - t0
    loop = bag_loop_step(out, Path(sys.executable).parent, dict(os.environ))
    grasp = grasp_step(out, extra_prompts=(str(loop.checkpoint),) if loop.checkpoint else ())
    live = live_ros_step(out, data, prompt=str(loop.checkpoint) if loop.checkpoint else "1bg")
    figs = sorted((out / "figures").glob("*.png"))
    lines = ["# bgprompt demo report", "",
             f"The embedded default `mini` (a small DPT-hybrid trained on rendered scenes only) on {count} freshly "
             f"rendered held-out objects, with and without its shipped background prompts "
             f"(render + evaluation {t_eval:.0f} s).", "",
             markdown_table(rows), "",
             "Read it with the references: `flat` is a constant depth, `oracle-shift` the best a renormalization of "
             "the white-background output can do. See docs/RESULTS.md for the full evaluation.", "",
             "## Figures", "", *[f"![{p.name}](figures/{p.name})" for p in figs], "",
             "## Learn a prompt from the robot's own bag", "", *loop.lines, "",
             "## Grasp-ready clouds in metres (RGB-D sensor that fails on glass, metal, black plastic)", "", *grasp, "",
             "## Live ROS 2 run", "", *live, ""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"\n{live[0]}")
    print(f"demo report: {out.resolve()}/report.md\nfigures: {out.resolve()}/figures/ (and {out.resolve()}/bag_eval/)")
    if loop.checkpoint is None:
        print(f"demo: the robot loop failed: {loop.lines[0]}", file=sys.stderr)
    return 0 if "SHORTFALL" not in live[0] and loop.checkpoint is not None else 1
