"""``make demo``'s robot loop (issue 27): a prompt learned from the robot's own RGB-D bag, no ground truth in the loss.

The four steps a robot team follows (README, "Learning a prompt from your robot's own recordings"), each its command:
1. record: a bag of tabletop frames seen by a simulated RGB-D sensor (`bgprompt bag make` writes what `bag record`
   or `ros2 bag record` would write from the camera driver: image, camera_info, instance mask, 16UC1 depth);
2. learn: `bgprompt train --data BAG --prompt 1bg --init shipped` (the sensor's trustworthy readings supervise);
3. evaluate: the checkpoint beside the shipped prompts on held-out frames (the demo's grasp step, another seed);
4. deploy: the live node runs with its ``prompt`` parameter set to the checkpoint (the demo's live step).
The demo trains a few steps only: it shows the loop, not a gain (docs/grasp/bag_trained.md measures that).
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT = "bag-trained-1bg.safetensors"


@dataclass
class BagLoop:
    """What the loop's first two steps produced: the checkpoint (None when a step failed) and report lines."""

    checkpoint: Path | None
    lines: list[str] = field(default_factory=list)


def one_line_tail(text: str, n: int = 400) -> str:
    """The last ``n`` characters of a command's output on one line (the demo's error reports)."""
    return " ".join(text.strip().split())[-n:]


def bag_loop_step(out: Path, exe: Path, env: dict, frames: int = 12, steps: int = 20) -> BagLoop:
    """Steps 1-2 of the loop: render ``frames`` tabletop frames (seed 905, none held out elsewhere in the demo), write
    them as a bag and train a 1-BG prompt on it for ``steps`` steps, warm-started from the shipped one."""
    renders, bag, ckpt = out / "robot_frames", out / "robot_bag", out / CHECKPOINT
    bg = str(exe / "bgprompt")
    commands = [
        [bg, "render", "tabletop", "--out", str(renders), "--count", str(frames), "--size", "256", "--seed", "905",
         "--families", "primitive", "superquadric", "lathe"],
        [bg, "bag", "make", "--data", str(renders), "--out", str(bag)],
        [bg, "train", "--model", "mini", "--data", str(bag), "--prompt", "1bg", "--init", "shipped", "--steps",
         str(steps), "--batch", "4", "--optimizer", "adam", "--lr", "0.003", "--val-every", str(steps),
         "--out", str(ckpt), "--logdir", str(out / "tensorboard"), "--local-only"],
    ]
    done = [(renders / "manifest.json").is_file(), (bag / "metadata.yaml").is_file(), ckpt.is_file()]
    lines: list[str] = []
    t0 = time.monotonic()
    for cmd, skip in zip(commands, done):
        shown = "bgprompt " + " ".join(cmd[1:]).replace(str(out) + "/", "")
        lines.append(f"    {shown}")
        if skip:
            continue
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if run.returncode != 0:
            return BagLoop(None, [f"**FAILED** (status {run.returncode}): `{shown}`: {one_line_tail(run.stderr)}"])
        said = [ln for ln in run.stdout.splitlines() if ln.startswith("supervised by")]
        lines += [f"    # {s}".replace(str(out) + "/", "") for s in said]
    head = (f"A robot's loop without ground truth in the loss, each step its command ({time.monotonic() - t0:.0f} s "
            f"here; {steps} training steps only: the loop, not a gain, see docs/grasp/bag_trained.md):")
    tail = (f"Step 3 evaluates `{CHECKPOINT}` beside the shipped prompts in the grasp table below (held-out frames, "
            f"seed 901); step 4 runs the live node with `prompt: {CHECKPOINT}` (its parameter file: node_params.yaml).")
    return BagLoop(ckpt, [head, "", *lines, "", tail])
