"""A training run's resumable state: ``OUT.state/step-NNNNNNN-*/`` holds the trainable tensors and the optimizer
state (``state.safetensors``: ``param.NAME`` and ``opt.PID.NAME``) and the counters (``state.json``: step,
history, best, config, param groups, the optimizer's scalars, the process layout); ``LATEST`` names the current
step directory. Written atomically, so a run killed at any moment resumes from the last complete state."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bgprompt_core.atomic import atomic_write, fsync_path
from bgprompt_core.method.config import ConfigError

from .config import TrainConfig


def state_tensors(trainable: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The tensors to save (trainable parameters and the optimizer's tensor state) and the optimizer's scalars."""
    tensors = {f"param.{k}": v.detach().cpu().contiguous() for k, v in trainable.state_dict().items()}
    state = opt.state_dict()
    for pid, st in state["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"opt.{pid}.{name}"] = val.detach().cpu().contiguous()
    scalars = {str(pid): {n: v for n, v in st.items() if not isinstance(v, torch.Tensor)}
               for pid, st in state["state"].items()}
    return tensors, scalars


def write_state(state_dir: Path, step: int, tensors: dict, meta: dict) -> None:
    """One step directory, then ``LATEST`` pointing at it, then the older directories removed."""
    # a complete, fsynced step directory under a new name first, then the LATEST pointer is replaced
    # atomically, and only then are older directories removed: the state LATEST names is never touched
    # (saving the same step twice, as a resume with --init-bias at step 0 does, included)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=state_dir))
    step_dir = state_dir / f"step-{step:07d}-{tmp.name.removeprefix('.tmp-')}"
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta))
    for f in ("state.safetensors", "state.json", "."):
        fsync_path(tmp / f)
    os.replace(tmp, step_dir)
    fsync_path(state_dir)
    atomic_write(state_dir / "LATEST", lambda p: Path(p).write_text(step_dir.name))
    for old in state_dir.glob("step-*"):
        if old != step_dir:
            shutil.rmtree(old, ignore_errors=True)


def read_state(state_dir: Path, cfg: TrainConfig) -> tuple[Path, dict]:
    """The step directory ``LATEST`` names and its ``state.json``, checked against ``cfg`` (the same run)."""
    latest = state_dir / "LATEST"
    if not latest.is_file():
        raise FileNotFoundError(f"nothing to resume: {latest} does not exist")
    step_dir = state_dir / latest.read_text().strip()
    meta = json.loads((step_dir / "state.json").read_text())
    if meta["config"].get("prompt") == "single":  # states written before the name 1bg
        meta["config"]["prompt"] = "1bg"
    # states written before a field existed: the field at its default is the same run
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    meta["config"] = {**{k: v for k, v in defaults.items() if k not in meta["config"]}, **meta["config"]}
    if meta["config"] != cfg.to_dict():
        diff = {k: (v, cfg.to_dict().get(k)) for k, v in meta["config"].items() if cfg.to_dict().get(k) != v}
        raise ConfigError(f"cannot resume {step_dir}: the run was started with other settings {diff}")
    return step_dir, meta


def restore_tensors(step_dir: Path, meta: dict, trainable: torch.nn.Module, opt: torch.optim.Optimizer,
                    device: torch.device) -> None:
    """Load the saved parameters into ``trainable`` and the optimizer state into ``opt`` (on ``device``)."""
    tensors = load_file(str(step_dir / "state.safetensors"))
    trainable.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("param.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v.to(device)
    for pid, sc in meta["opt_scalars"].items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
