"""The training loop of ``bgprompt train`` (paper Sec. 3-4): the frozen network and the prompt (or, for
``--prompt finetune``, the network's own weights), one optimisation step, validation with checkpoint selection
by ``--select-by``, and the prompt / model written for the best step."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bgprompt_core.atomic import atomic_write
from bgprompt_core.evaluation.protocol import sample_metrics
from bgprompt_core.method.checkpoint import PromptMeta, load_prompt, save_prompt
from bgprompt_core.method.config import ConfigError, DepthTransformConfig
from bgprompt_core.method.metrics import object_depth_loss
from bgprompt_core.method.model import PromptedDepth
from bgprompt_core.method.prompts import FourierPrompt, PromptNet, build_prompt
from bgprompt_core.networks.loading import DepthNet, load_depth_net
from bgprompt_core.runtime.devices import torch_device

from ..data.bag_sets import check_usable, supervision_report
from ..distributed import Distributed
from ..sensor_loss import weighted_object_loss
from .config import LOWER_IS_BETTER, TrainConfig, TrainingError, learning_rate, parse_weighted
from .samples import SampleCache, batch_items, val_items
from .state import read_state, restore_tensors, state_tensors, write_state

log = logging.getLogger("bgprompt.train")


def init_bias_from(pnet: PromptNet, path: str, net: DepthNet) -> None:
    """Copy a trained 1-BG prompt into a PNet's bias (same network, resolution and Fourier settings)."""
    single, _ = load_prompt(path, net.spec)
    if not isinstance(single, FourierPrompt) or single.cfg != pnet.bias.cfg:
        raise ConfigError(f"{path}: --init-bias needs a 1-BG Fourier prompt with the PNet bias's config "
                          f"{pnet.bias.cfg}, got {getattr(single, 'cfg', type(single).__name__)}")
    with torch.no_grad():
        pnet.bias.spectrum.copy_(single.spectrum)


def resolve_device(name: str) -> torch.device:
    """The configured device name as a torch device (the choice itself: ``runtime.devices.torch_device``)."""
    return torch.device(torch_device(name))


class Trainer:
    """One ``bgprompt train`` run: ``Trainer(cfg, dist).run(resume=...)`` (under torchrun, ``dist`` says the rank)."""

    def __init__(self, cfg: TrainConfig, dist: Distributed | None = None):
        self.cfg = cfg
        self.dist = dist or Distributed()
        if cfg.batch % self.dist.world:
            raise ConfigError(f"--batch is the global batch; {cfg.batch} does not split over {self.dist.world} "
                              f"processes: use a multiple of {self.dist.world}")
        torch.manual_seed(cfg.seed)
        self.device = (torch.device("cuda", self.dist.local_rank) if self.dist.backend == "nccl"
                       else resolve_device(cfg.device))
        self.net: DepthNet = load_depth_net(cfg.model, self.device, local_only=cfg.local_only)
        size = cfg.size or self.net.spec.input_size[0]
        self.net.spec.check_input_size(size, size)
        self.size = size
        self._set_trainable(size)
        self.model = PromptedDepth(self.net, self.prompt, cfg.composite, DepthTransformConfig(range=cfg.eq2_range))
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        self.params = params
        # PNet and the finetuned network average their gradients through DDP (bucketed, overlapped with the
        # backward pass); the 1-BG prompt's few Fourier tensors by one all-reduce in train_step
        self.ddp = self.dist.world > 1 and cfg.prompt in ("pnet", "finetune")  # one process: nothing to sync
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            if cfg.prompt == "pnet":
                self.model.prompt = DDP(self.prompt, device_ids=ids)
            else:  # transformers models may leave heads unused in a depth forward
                self.net.model = DDP(self.trainable, device_ids=ids, find_unused_parameters=True)
        self.opt = (torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd"
                    else torch.optim.Adam(params, lr=cfg.lr))
        self._load_data(size)
        self.step = 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.state_dir = Path(str(cfg.out) + ".state")

    def _set_trainable(self, size: int) -> None:
        """What learns: the network's own weights (finetune) or the prompt (built, warm-started or given a bias)."""
        cfg = self.cfg
        self.prompt = None
        if cfg.prompt == "finetune":
            self.net.unfreeze()
            self.trainable: torch.nn.Module = self.net.model
        else:
            prompt = self._warm_start(size) if cfg.init else build_prompt(cfg.prompt_config(size))
            self.prompt = prompt.to(self.device)
            if cfg.init_bias:
                init_bias_from(self.prompt, cfg.init_bias, self.net)
            self.trainable = self.prompt

    def _load_data(self, size: int) -> None:
        """The training and validation sets at ``size`` (bags with their supervision report, printed by rank 0)."""
        cfg = self.cfg
        weighted = parse_weighted(cfg.data)
        bags = (cfg.bag_config(), cfg.trust_config()) if cfg.uses_bags else None
        self.train_data = SampleCache([p for p, _ in weighted], size, cfg.recenter, bags, self.dist)
        self.weights = [w for _, w in weighted]
        self.val_data = SampleCache(cfg.val, size, cfg.recenter, bags, self.dist) if cfg.val else None
        check_usable(self.train_data.sets)
        if self.val_data:
            check_usable(self.val_data.sets)
        self.supervision = supervision_report(self.train_data.sets) if bags else None
        if self.supervision and self.dist.main:
            sv = self.supervision
            tqdm.write(f"{cfg.supervision} supervision: {sv['objects']} objects of {sv['objects_seen']} in "
                       f"{sv['frames']} frames, "
                       f"{sv['supervised_pixels']} supervised pixels ({100 * sv['supervised_share']:.1f}% of the "
                       f"objects' input pixels; {100 * sv['trusted_share']:.1f}% of their mask pixels have a trusted "
                       f"reading)")

    def _warm_start(self, size: int):
        """The prompt of ``--init``: a shipped prompt (of --prompt's kind for "shipped") or a checkpoint."""
        from bgprompt_core.runtime.build import resolve_prompt_path

        cfg = self.cfg
        name = cfg.prompt if cfg.init == "shipped" else cfg.init
        path = resolve_prompt_path(name, self.net.spec)
        if path is None:
            raise ConfigError("--init none: there is nothing to warm-start from; leave --init out")
        prompt, meta = load_prompt(path, self.net.spec)
        kind = "pnet" if isinstance(prompt, PromptNet) else "1bg"
        if kind != cfg.prompt:
            raise ConfigError(f"--init {cfg.init}: {path} is a {kind} prompt, --prompt is {cfg.prompt}")
        if (prompt.cfg.height, prompt.cfg.width) != (size, size):
            raise ConfigError(f"--init {cfg.init}: {path} is {prompt.cfg.width}x{prompt.cfg.height}, training runs "
                              f"at {size}x{size} (--size)")
        if meta.composite != cfg.composite or meta.depth_transform.range != cfg.eq2_range:
            raise ConfigError(f"--init {cfg.init}: {path} was trained with composite {meta.composite!r} and Eq. 2 "
                              f"range {meta.depth_transform.range!r}; give --composite / --eq2-range the same")
        log.info("warm start from %s (%s)", path, prompt.cfg)
        return prompt

    # --- checkpoints -------------------------------------------------------------------------
    def save_state(self) -> None:
        """Trainable tensors + optimizer state (safetensors) and counters (JSON), written atomically (state.py)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.dist.main:  # rank 0 alone writes files
            return
        tensors, scalars = state_tensors(self.trainable, self.opt)
        meta = {"step": self.step, "history": self.history, "best": self.best, "config": self.cfg.to_dict(),
                "supervision": self.supervision,
                "param_groups": self.opt.state_dict()["param_groups"], "opt_scalars": scalars,
                "distributed": self.dist.describe(self.cfg.batch)}
        write_state(self.state_dir, self.step, tensors, meta)
        # after the atomic write: what `--resume` continues from (and the tests' readiness signal to kill a run)
        tqdm.write(f"state saved: step {self.step} in {self.state_dir}")
        sys.stdout.flush()

    def load_state(self) -> None:
        step_dir, meta = read_state(self.state_dir, self.cfg)
        restore_tensors(step_dir, meta, self.trainable, self.opt, self.device)
        self.step, self.history, self.best = meta["step"], meta["history"], meta["best"]

    def save_result(self, metrics: dict) -> None:
        if not self.dist.main:
            return
        training = {**self.cfg.to_dict(), "distributed": self.dist.describe(self.cfg.batch)}
        if self.supervision is not None:
            training["supervision"] = {k: v for k, v in self.supervision.items() if k != "bags"}
        if self.prompt is not None:
            meta = PromptMeta(prompt=self.prompt.cfg, network=self.net.spec, composite=self.cfg.composite,
                              depth_transform=self.model.transform, training=training, metrics=metrics)
            save_prompt(self.cfg.out, self.prompt, meta)
            return
        out = Path(self.cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        self.trainable.save_pretrained(out, safe_serialization=True)  # the model itself, never its DDP wrapper
        src = Path(self.net.spec.source) / "preprocessor_config.json"
        if src.is_file():
            (out / "preprocessor_config.json").write_text(src.read_text())
        (out / "bgprompt_finetune.json").write_text(json.dumps({"base": self.net.spec.to_dict(),
                                                                "training": training, "metrics": metrics}))

    # --- loop --------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """The paper's protocol on every validation set: per-sample metrics, averaged in sample order.

        Under torchrun each rank evaluates every W-th sample; the per-sample figures are gathered, so the
        averages are the 1-process ones."""
        self.model.eval()
        mine: dict[tuple[int, int], dict[str, float]] = {}
        for d, ds in enumerate(self.val_data.sets):
            items = val_items(len(ds), self.cfg.val_samples)[self.dist.rank::self.dist.world]
            for chunk in np.array_split(np.array(items), max(1, len(items) // 16)):
                if not len(chunk):
                    continue
                b = self.val_data.batch([(d, int(i)) for i in chunk], self.device)
                depth = self.model(b["image"], b["mask"])["depth"]
                ref, ref_mask = (b["ref"], b["ref_mask"]) if "ref" in b else (b["depth"], b["mask"][:, 0])
                per_sample = sample_metrics(depth.float(), ref, ref_mask, b["K"])
                for j, i in enumerate(chunk):
                    mine[(d, int(i))] = {k: float(v[j]) for k, v in per_sample.items()}
        merged = {key: row for part in self.dist.gather(mine) for key, row in part.items()}
        out: dict[str, list] = {}
        for key in sorted(merged):
            for k, v in merged[key].items():
                out.setdefault(k, []).append(v)
        m = {k: float(np.mean(v)) for k, v in out.items()}
        m["collapse_fraction"] = m.pop("collapsed")
        return m

    def train_step(self) -> float:
        cfg = self.cfg
        items = batch_items(cfg.seed, self.step, [len(s) for s in self.train_data.sets], self.weights, cfg.batch)
        b = self.train_data.batch(self.dist.shard(items), self.device)  # this rank's share of the global batch
        for g in self.opt.param_groups:
            g["lr"] = learning_rate(cfg, self.step)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
            depth = self.model(b["image"], b["mask"])["depth"]
        if "weight" in b:  # a bag run: Eq. 3 + Eq. 4 over the trusted readings only (sensor_loss.py)
            ref, weight = (b["ref"], b["ref_mask"]) if cfg.supervision == "truth" else (b["depth"], b["weight"])
            loss, _ = weighted_object_loss(depth.float(), ref, weight, b["K"], cfg.smooth_sigma)
        else:
            loss, _ = object_depth_loss(depth.float(), b["depth"], b["mask"][:, 0], b["K"])
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss is {loss.item()} at step {self.step}: training stopped before the prompt "
                                f"took a non-finite update (the last checkpoint on disk is intact)")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if not self.ddp:
            self.dist.average_gradients(self.params)
        self.opt.step()
        return self.dist.mean(loss.item())  # the global batch's loss: the mean of the ranks' equal shares

    def run(self, resume: bool = False) -> dict:
        cfg = self.cfg
        if resume:
            self.load_state()
            log.info("resumed at step %d", self.step)
        writer = self._start_logs()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.prompt}", unit="step",
                   disable=not self.dist.main)
        t0, start = time.perf_counter(), self.step
        try:  # closed on an error too, so `bgprompt train: error:` starts its own line
            if self.step == 0 and cfg.init_bias and self.val_data:
                self._validate_and_select(writer)  # the warm start (the 1-BG prompt) is the bar to beat
            while self.step < cfg.steps:
                loss = self.train_step()
                self.step += 1
                self.history.append({"step": self.step, "loss": loss})
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if writer:
                    writer.add_scalar("train/loss", loss, self.step)
                    writer.add_scalar("train/lr", learning_rate(cfg, self.step - 1), self.step)
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    self._validate_and_select(writer)
        finally:
            bar.close()
        if writer:
            writer.close()
        seconds = time.perf_counter() - t0
        if self.dist.main and self.step > start:  # the loop's own time, for benchmarks (make bench)
            atomic_write(self.state_dir / "timing.json", lambda p: Path(p).write_text(json.dumps(
                {"steps": self.step - start, "seconds": seconds, **self.dist.describe(cfg.batch)})))
        return {"best": self.best, "seconds": seconds, "history": self.history, "supervision": self.supervision}

    def _start_logs(self):
        """The run's supervision.json (bag runs) and its TensorBoard writer (``--logdir``; rank 0 only)."""
        writer = None
        if self.supervision is not None and self.dist.main:  # per run: what supervised the prompt
            self.state_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.state_dir / "supervision.json",
                         lambda p: Path(p).write_text(json.dumps(self.supervision, indent=1)))
        if self.cfg.logdir and self.dist.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(self.cfg.logdir)
            if self.supervision is not None:
                for k in ("objects", "supervised_pixels", "supervised_share", "trusted_share"):
                    writer.add_scalar(f"data/{k}", self.supervision[k], self.step)
        return writer

    def _validate_and_select(self, writer) -> None:
        cfg = self.cfg
        if self.val_data:
            metrics = self.validate()
        else:
            metrics = {"loss": float(np.mean([h["loss"] for h in self.history[-cfg.val_every:]]))}
        metrics["step"] = self.step
        if self.history:
            self.history[-1]["val"] = metrics
        self._log_val(metrics, writer)
        key = cfg.select_by if cfg.select_by in metrics else "loss"
        better = self.best is None or (metrics[key] < self.best[key] if LOWER_IS_BETTER[key] else metrics[key] > self.best[key])
        if better:
            self.best = metrics
            self.save_result(metrics)
        self.save_state()

    def _log_val(self, m: dict, writer) -> None:
        if not self.dist.main:
            return
        text = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k != "step")
        tqdm.write(f"step {self.step}: val {text}")
        if m.get("collapse_fraction", 0) > self.cfg.collapse_warn:
            msg = (f"WARNING: {100 * m['collapse_fraction']:.0f}% of validation objects have COLLAPSED to a nearly "
                   f"constant depth (> {100 * self.cfg.collapse_warn:.0f}%): the prompt may be winning si-RMSE by "
                   f"flattening objects through Eq. 2, not by better shape. Check shape_err and the flat reference.")
            log.warning(msg)
            tqdm.write(msg)
        if writer:
            for k, v in m.items():
                if k != "step":
                    writer.add_scalar(f"val/{k}", v, self.step)
            if self.prompt is not None and self.val_data is not None:
                b = self.val_data.batch([(0, 0)], self.device)
                with torch.no_grad():
                    writer.add_image("prompt", self.prompt(b["mask"], b["image"])[0].clamp(0, 1), self.step)


