"""Data-parallel training under torchrun on CPU (gloo, 2 processes, rendezvous on 127.0.0.1), against 1 process."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bgprompt_training.distributed import Distributed, choose_backend
from test_train_eval import kill_once_saved, saved_step, world  # noqa: F401  (world: the tiny network and objects)

BIN = Path(sys.executable).parent
STEPS, BATCH = 6, 8
PROMPTS = {"1bg": [], "pnet": ["--prompt", "pnet", "--pnet-downs", "3", "--pnet-channels", "8"],
           "finetune": ["--prompt", "finetune"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(world, out, *extra, steps=STEPS):  # noqa: F811
    return ["train", "--model", str(world / "net"), "--data", str(world / "train"), "--val", str(world / "train"),
            "--out", str(out), "--steps", str(steps), "--batch", str(BATCH), "--val-every", "3", "--val-samples",
            "12", "--optimizer", "sgd", "--lr", "0.05", "--local-only", *extra]  # sgd: the default


def torchrun_cmd(n: int, args: list[str]) -> list[str]:
    """torchrun with a static rendezvous on 127.0.0.1 (never a hostname that could resolve off the machine)."""
    return [str(BIN / "torchrun"), "--nnodes", "1", "--nproc_per_node", str(n), "--master-addr", "127.0.0.1",
            "--master-port", str(free_port()), "-m", "bgprompt_training", *args]


TORCHRUN_ENV = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def torchrun(n: int, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_cmd(n, args), capture_output=True, text=True, timeout=600, env=TORCHRUN_ENV)


def rank_process(root: int, rank: int) -> int | None:
    """The pid of torchrun worker ``rank`` (its environment's RANK) among the descendants of process ``root``."""
    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"RANK={rank}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            pid = int(entry.name)
            while pid > 1 and pid != root:
                pid = parent(pid)
        except (OSError, ValueError, IndexError):  # a process that ended meanwhile
            continue
        if pid == root:
            return int(entry.name)
    return None


def single(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "bgprompt"), *args], capture_output=True, text=True, timeout=600)


def state(out: Path) -> tuple[dict, dict]:
    state_dir = Path(str(out) + ".state")
    step_dir = state_dir / (state_dir / "LATEST").read_text().strip()
    return json.loads((step_dir / "state.json").read_text()), load_file(str(step_dir / "state.safetensors"))


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference; tensors whose true gradient is zero (attention key biases: softmax is invariant to
    them) hold float noise of ~1e-12, compared absolutely."""
    return float((a - b).norm() / max(float(a.norm()), 1e-3))


def assert_same_run(a: dict, b: dict, rtol: float = 1e-4, steps: int = STEPS) -> None:
    assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]] == list(range(1, steps + 1))
    assert np.allclose([h["loss"] for h in a["history"]], [h["loss"] for h in b["history"]], rtol=rtol)
    vals = [(h["val"], g["val"]) for h, g in zip(a["history"], b["history"]) if "val" in h]
    assert len(vals) == steps // 3
    for va, vb in vals:  # validation sharded over 2 ranks equals 1-process validation
        assert va.keys() == vb.keys() and all(np.isclose(va[k], vb[k], rtol=rtol, atol=1e-6) for k in va)


@pytest.mark.parametrize("kind", list(PROMPTS))
def test_two_ranks_equal_one_process_with_the_same_global_batch(world, tmp_path, kind):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    ran = single(train_args(world, one, *PROMPTS[kind]))
    assert ran.returncode == 0, ran.stderr[-2000:]
    ran = torchrun(2, train_args(world, two, *PROMPTS[kind], "--logdir", str(tmp_path / "tb")))
    assert ran.returncode == 0, ran.stderr[-2000:]
    (meta_one, t_one), (meta_two, t_two) = state(one), state(two)
    assert_same_run(meta_one, meta_two)
    params = [k for k in t_one if k.startswith("param.")]
    # float tolerance: per-rank batches change the kernels' summation order, and PNet's sigmoid(40 x) amplifies
    # it; the same 1-process run with 1 vs 2 threads already differs by 1.5e-4 (relative norm) here
    assert params and max(rel_diff(t_one[k], t_two[k]) for k in params) < 2e-3
    assert meta_two["distributed"] == {**meta_two["distributed"], "world_size": 2, "backend": "gloo",
                                       "global_batch": BATCH, "per_rank_batch": BATCH // 2,
                                       "master_addr": "127.0.0.1"}
    # rank 0 alone writes: one TensorBoard file, one state, one summary line
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    assert ran.stdout.count("best (si_rmse)") == 1
    names = sorted(p.name for p in Path(str(two) + ".state").iterdir())
    assert len(names) == 3 and names[0] == "LATEST" and names[1].startswith("step-0000006") and names[2] == "timing.json"


def test_a_killed_rank_fails_the_job_and_resume_in_one_process_continues_it(world, tmp_path):  # noqa: F811
    steps = 12  # checkpoints every 3 steps; rank 1 is killed from outside once the first one is on disk
    full, part = tmp_path / "full", tmp_path / "part"
    assert single(train_args(world, full, steps=steps)).returncode == 0
    state_dir = Path(str(part) + ".state")
    with open(tmp_path / "killed.err", "w") as err:
        job = subprocess.Popen(torchrun_cmd(2, train_args(world, part, steps=steps)), stdout=subprocess.PIPE,
                               stderr=err, env=TORCHRUN_ENV)
        seen = kill_once_saved(job, 3, target=lambda: rank_process(job.pid, 1), deadline=600)
    stderr = (tmp_path / "killed.err").read_text()
    assert job.returncode != 0 and "exitcode" in stderr and "-9" in stderr
    latest = saved_step(state_dir)
    assert latest in range(3, steps, 3) and latest >= seen
    names = sorted(p.name for p in state_dir.iterdir())
    assert len(names) == 2 and names[0] == "LATEST" and names[1].startswith(f"step-{latest:07d}")  # nothing half-written
    resumed = single(train_args(world, part, "--resume", steps=steps))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (meta_full, t_full), (meta_part, t_part) = state(full), state(part)
    assert_same_run(meta_full, meta_part, steps=steps)
    assert meta_part["distributed"]["world_size"] == 1  # continued by 1 process what 2 began
    assert rel_diff(t_full["param.spectrum"], t_part["param.spectrum"]) < 1e-4


def test_pretrain_on_two_ranks_takes_the_one_process_steps(tmp_path):
    """The scene pretraining loss normalises by pixel counts: summed over ranks, the averaged gradient is the
    global batch's. Adam's first step is a sign step, so float noise in near-zero gradients makes runs drift
    later; the first two steps' losses and the first validation must agree."""
    from bgprompt_training.cli import PACKAGE_CONFIGS

    config = json.loads((PACKAGE_CONFIGS / "mini.json").read_text())
    config["training"].update(steps=2, batch=4, val_every=1, warmup=2)
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    scenes = tmp_path / "scenes"
    assert single(["render", "scenes", "--out", str(scenes), "--count", "6", "--size", "128", "--seed", "1000",
                   "--backend", "numpy"]).returncode == 0
    args = ["pretrain", "--config", str(tmp_path / "tiny.json"), "--data", str(scenes), "--val", str(scenes)]
    assert single(args + ["--out", str(tmp_path / "one")]).returncode == 0
    ran = torchrun(2, args + ["--out", str(tmp_path / "two")])
    assert ran.returncode == 0, ran.stderr[-2000:]
    h1, h2 = ([h for h in json.loads((tmp_path / d / "training.json").read_text())["metrics"]["history"]]
              for d in ("one", "two"))
    assert np.allclose([h["loss"] for h in h1], [h["loss"] for h in h2], rtol=1e-5)
    assert np.isclose(h1[0]["abs_rel"], h2[0]["abs_rel"], rtol=1e-4)
    assert json.loads((tmp_path / "two" / "training.json").read_text())["metrics"]["distributed"]["world_size"] == 2


def test_backend_choice_and_shards(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_backend("auto") == "nccl" and choose_backend("gloo") == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_backend("auto") == "gloo"
    with pytest.raises(ValueError, match="dist-backend"):
        choose_backend("mpi")
    items = list(range(8))
    assert [Distributed(r, 2, r, "gloo").shard(items) for r in (0, 1)] == [items[:4], items[4:]]
    with pytest.raises(ValueError, match="does not split over 3 ranks"):
        Distributed(0, 3, 0, "gloo").shard(items)
