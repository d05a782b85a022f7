"""``make demo``'s robot loop (record a bag, train on it, evaluate, deploy): each step is its command, and a step
that fails stops the loop by name instead of handing a missing checkpoint on (make demo runs it for real)."""
import os
import stat
from pathlib import Path

from bgprompt_training.demo_loop import CHECKPOINT, bag_loop_step

# a stand-in `bgprompt`: logs its verbs, makes each step's output, fails on the verb named by FAIL_VERB
FAKE = """#!/usr/bin/env python3
import os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["LOG"], "a") as f:
    f.write(" ".join(args[:2]) + "\\n")
if args[0] == os.environ.get("FAIL_VERB"):
    sys.exit("bgprompt train: error: no trustworthy sensor pixel in robot_bag")
out = Path(args[args.index("--out") + 1])
if args[0] == "render":
    out.mkdir(parents=True); (out / "manifest.json").write_text("{}")
elif args[0] == "bag":
    out.mkdir(parents=True); (out / "metadata.yaml").write_text("")
else:
    out.write_bytes(b"")
    print(f"supervised by the sensor: 10 pixels of 2 objects (1.0% of their input pixels) in 3 frames; details in {out}.state/supervision.json")
"""


def _fake_exe(tmp_path: Path) -> Path:
    exe = tmp_path / "bin"
    exe.mkdir()
    script = exe / "bgprompt"
    script.write_text(FAKE)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return exe


def test_the_loop_runs_record_train_in_order_and_names_the_checkpoint(tmp_path):
    out, log = tmp_path / "demo", tmp_path / "log"
    out.mkdir()
    loop = bag_loop_step(out, _fake_exe(tmp_path), {**os.environ, "LOG": str(log)}, frames=3, steps=2)
    assert loop.checkpoint == out / CHECKPOINT and loop.checkpoint.is_file()
    assert log.read_text().split("\n")[:3] == ["render tabletop", "bag make", "train --model"]
    text = "\n".join(loop.lines)
    assert "bgprompt train --model mini --data robot_bag --prompt 1bg --init shipped --steps 2" in text
    assert "# supervised by the sensor: 10 pixels of 2 objects" in text and str(out) not in text  # relative paths
    # a second demo run reuses what the first made: no command runs again
    again = bag_loop_step(out, tmp_path / "bin", {**os.environ, "LOG": str(log)}, frames=3, steps=2)
    assert again.checkpoint == loop.checkpoint and len(log.read_text().splitlines()) == 3


def test_a_failing_step_stops_the_loop_by_name_with_no_checkpoint(tmp_path):
    out, log = tmp_path / "demo", tmp_path / "log"
    out.mkdir()
    env = {**os.environ, "LOG": str(log), "FAIL_VERB": "train"}
    loop = bag_loop_step(out, _fake_exe(tmp_path), env, frames=3, steps=2)
    assert loop.checkpoint is None
    assert loop.lines[0].startswith("**FAILED** (status 1): `bgprompt train --model mini --data robot_bag")
    assert "no trustworthy sensor pixel in robot_bag" in loop.lines[0]
    assert not (out / CHECKPOINT).exists()
