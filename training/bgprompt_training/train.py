"""``bgprompt train``: learn a background prompt through a frozen depth network (paper Sec. 3-4).

Loss: si-RMSE (Eq. 3) + normal loss (Eq. 4), GT rescaled to masked mean 5. SGD with momentum 0.9,
the reference code's schedule by default (lr 5e-4, divided by 10 at 80% of the steps; the paper's
text says 5e-5: ``--lr 5e-5``). ``--prompt finetune`` is the paper's baseline: the same loss and
schedule on the network's own weights, white background.

Reproducible and resumable: the batch of step t is drawn from (seed, t) alone, and a checkpoint
holds the trainable tensors and the optimizer state, so ``--resume`` continues exactly, also with another
number of processes. Data-parallel under ``torchrun`` (distributed.py says how batches, gradients,
validation and files are shared out).

Robot recordings: ``--data`` may name ROS 2 bags (a rosbag2 directory with metadata.yaml, or ``bag:DIR``),
mixed with render directories. A bag's objects are cropped like the node (``recenter``) and supervised by the
sensor only: Eq. 3 + Eq. 4 over the trustworthy readings (data/trust.py, sensor_loss.py); a bag's ground truth,
when it has one, serves validation alone. Render sets in such a run keep their ground truth (weight = mask).
``--init shipped`` (or a shipped prompt name, or a checkpoint) warm-starts the prompt.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
import logging
import math
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from bgprompt_core.networks.loading import DepthNet, load_depth_net
from bgprompt_core.errors import BgpromptError
from bgprompt_core.atomic import atomic_write, fsync_path
from bgprompt_core.method.checkpoint import PromptMeta, load_prompt, save_prompt
from bgprompt_core.method.config import (ConfigError, DepthTransformConfig, FourierPromptConfig, PixelPromptConfig,
                                  PromptNetConfig)
from bgprompt_core.method.metrics import object_depth_loss
from bgprompt_core.method.model import PromptedDepth
from bgprompt_core.method.prompts import FourierPrompt, PromptNet, build_prompt

from .data.bag_sets import BagSet, check_usable, supervision_report
from .data.bags import BagReadConfig, is_bag
from .data.open import open_dataset
from .data.trust import TrustConfig
from .sensor_loss import weighted_object_loss
from .distributed import Distributed
from .data.transforms import Compose, Recenter, ReplaceBackground, crop_to_square, resize
from bgprompt_core.evaluation.protocol import sample_metrics

log = logging.getLogger("bgprompt.train")
EVAL_SEED = 1338
LOWER_IS_BETTER = {"si_rmse": True, "shape_err": True, "normal_cos": False, "loss": True}
BAG_FIELDS = ("image_topic", "info_topic", "mask_topic", "depth_topic", "truth_topic", "stride", "sync", "slop",
              "mask_labels", "min_pixels", "supervision")  # TrainConfig fields that are BagReadConfig's


class TrainingError(BgpromptError, RuntimeError):
    """Training cannot go on (a non-finite loss); the prompt on disk is the last good one."""


@dataclass
class TrainConfig:
    """One ``bgprompt train`` run; every field is the CLI flag of the same name (``--val-every`` -> val_every).

    Args:
        model (str): the frozen depth network D (registry name, hub id or directory).
        data (list[str]): training sets, ``SPEC[@WEIGHT]`` (render directories or FORMAT:PATH).
        val (list[str], default []): held-out sets for validation and checkpoint selection.
        out (str, default "prompt.safetensors"): the prompt checkpoint (finetune: a model directory).
        prompt (str, default "1bg"): "1bg" (one background, Sec. 3.1), "pnet" (Sec. 3.2) or "finetune" (the
            paper's baseline: the network's weights on a white background). "single": deprecated "1bg".
        param (str, default "fourier"): the background's parameterization: "fourier" or "pixel" ("Img space").
        composite (str, default "replace"): Eq. 1 as M * I + (1 - M) * B ("replace") or the "Additive" ablation.
        pnet_input (str, default "mask"): PNet's input: "mask" or "image" ("Img input" ablation).
        bias (bool, default True): PNet's learned 1-BG bias (False: "No bias"; flag --no-bias).
        pnet_downs (int, default 7), pnet_channels (int, default 64): the U-Net (paper: 7 and 64).
        pnet_combine (str, default "mean"): PNet + bias: "mean" (reference code) or "residual" (logits).
        init_bias (str | None): a trained 1-BG checkpoint that initialises the PNet bias.
        divisor (float, default 0.2): the Fourier irfft divisor (reference 0.2, Lucent 4.0).
        eq2_range (str, default "image"): Eq. 2's min/max over the "image" (paper) or the "object".
        steps (int, default 1000): optimisation steps (paper: 150k).
        batch (int, default 8): the GLOBAL batch (paper: 8); under torchrun each of N processes takes batch / N.
        lr (float, default 5e-4): learning rate (reference code 5e-4; the paper's text says 5e-5).
        lr_drop_at (float, default 0.8): lr / 10 from this fraction of the steps on.
        optimizer (str, default "sgd"): "sgd" (momentum, the paper's) or "adam".
        momentum (float, default 0.9): SGD momentum.
        size (int | None): the network input side (default: the network's own).
        recenter (bool, default False): augment by re-centring objects with a virtual camera.
        val_every (int, default 100): validate every this many steps.
        val_samples (int, default 64): validation samples per set (seed 1338, the paper's protocol).
        select_by (str, default "si_rmse"): the metric that picks the best checkpoint.
        collapse_warn (float, default 0.10): warn when this share of validation objects collapses.
        seed (int, default 0): the batch of step t is drawn from (seed, t) alone.
        device (str, default "auto"): torch device.
        logdir (str | None): TensorBoard directory.
        local_only (bool, default False): never download model files.
        init (str | None): warm start: "shipped" (the model's shipped prompt of --prompt's kind), a shipped name
            (1bg, pnet, tabletop) or a checkpoint; the prompt then takes the checkpoint's config.
        image_topic, info_topic, mask_topic, depth_topic, truth_topic (str | None): bag topics (bag eval's
            defaults); stride (int, default 1): every stride-th synchronized frame; sync (default "exact"),
            slop (default 0.015): the node's synchronization; mask_labels (bool): mono8 masks hold object ids;
            min_pixels (int, default 32): trusted pixels an object needs (data/bags.py BagReadConfig).
        smooth_sigma (float, default 1.0): px, smoothing of the sensor depth for Eq. 4's normals (data/trust.py).
        supervision (str, default "sensor"): what supervises bag samples: "sensor" (the trusted readings) or
            "truth" (the bag's ground truth on the object: a comparison run only, e.g. docs/grasp/bag_trained.md;
            a robot has no ground truth).
    """

    model: str
    data: list[str]
    val: list[str] = field(default_factory=list)
    out: str = "prompt.safetensors"
    prompt: str = "1bg"
    param: str = "fourier"
    composite: str = "replace"
    pnet_input: str = "mask"
    bias: bool = True
    pnet_downs: int = 7
    pnet_channels: int = 64
    pnet_combine: str = "mean"
    init_bias: str | None = None
    divisor: float = 0.2
    eq2_range: str = "image"
    steps: int = 1000
    batch: int = 8
    lr: float = 5e-4
    lr_drop_at: float = 0.8
    optimizer: str = "sgd"
    momentum: float = 0.9
    size: int | None = None
    recenter: bool = False
    val_every: int = 100
    val_samples: int = 64
    select_by: str = "si_rmse"
    collapse_warn: float = 0.10
    seed: int = 0
    device: str = "auto"
    logdir: str | None = None
    local_only: bool = False
    init: str | None = None
    image_topic: str | None = None
    info_topic: str | None = None
    mask_topic: str | None = None
    depth_topic: str | None = None
    truth_topic: str | None = None
    stride: int = 1
    sync: str = "exact"
    slop: float = 0.015
    mask_labels: bool = False
    min_pixels: int = 32
    smooth_sigma: float = 1.0
    supervision: str = "sensor"

    def __post_init__(self) -> None:
        if self.prompt == "single":
            warnings.warn("--prompt single is deprecated: use --prompt 1bg", DeprecationWarning, stacklevel=3)
            self.prompt = "1bg"
        choices = {"prompt": ("1bg", "pnet", "finetune"), "param": ("fourier", "pixel"),
                   "composite": ("replace", "additive"), "pnet_input": ("mask", "image"),
                   "pnet_combine": ("mean", "residual"),
                   "eq2_range": ("image", "object"), "optimizer": ("sgd", "adam"),
                   "select_by": tuple(LOWER_IS_BETTER), "supervision": ("sensor", "truth")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.data:
            raise ConfigError("at least one --data set is needed")
        for name in ("steps", "batch", "val_every", "val_samples"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.init_bias and not (self.prompt == "pnet" and self.bias):
            raise ConfigError("--init-bias initialises a PNet's bias: use it with --prompt pnet (and a bias)")
        if self.init and self.prompt == "finetune":
            raise ConfigError("--init warm-starts a prompt: use it with --prompt 1bg or pnet")
        if self.init and self.init_bias:
            raise ConfigError("--init and --init-bias both initialise the prompt: give one")
        self.bag_config()  # validates the bag fields
        self.trust_config()

    def bag_config(self) -> BagReadConfig:
        return BagReadConfig(**{k: getattr(self, k) for k in BAG_FIELDS}, recenter_fill=0.8)

    def trust_config(self) -> TrustConfig:
        return TrustConfig(smooth_sigma=self.smooth_sigma)

    @property
    def uses_bags(self) -> bool:
        return any(is_bag(p) for p, _ in parse_weighted(self.data)) or any(is_bag(p) for p in self.val)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def prompt_config(self, size: int):
        if self.prompt == "pnet":
            return PromptNetConfig(height=size, width=size, num_downs=self.pnet_downs,
                                   base_channels=self.pnet_channels, input=self.pnet_input, space=self.param,
                                   bias=self.bias, combine=self.pnet_combine, bias_prompt={"divisor": self.divisor})
        if self.param == "pixel":
            return PixelPromptConfig(height=size, width=size)
        return FourierPromptConfig(height=size, width=size, divisor=self.divisor)


def init_bias_from(pnet: PromptNet, path: str, net: DepthNet) -> None:
    """Copy a trained 1-BG prompt into a PNet's bias (same network, resolution and Fourier settings)."""
    single, _ = load_prompt(path, net.spec)
    if not isinstance(single, FourierPrompt) or single.cfg != pnet.bias.cfg:
        raise ConfigError(f"{path}: --init-bias needs a 1-BG Fourier prompt with the PNet bias's config "
                          f"{pnet.bias.cfg}, got {getattr(single, 'cfg', type(single).__name__)}")
    with torch.no_grad():
        pnet.bias.spectrum.copy_(single.spectrum)


def parse_weighted(specs: list[str]) -> list[tuple[str, float]]:
    """``SPEC`` or ``SPEC@WEIGHT``."""
    out = []
    for s in specs:
        path, _, w = s.rpartition("@") if "@" in s else (s, "", "1")
        out.append((path, float(w)))
    return out


class SampleCache:
    """Datasets decoded once into memory as tensors at the training resolution.

    With ``bags`` (a run that reads ROS 2 bags), bag specs become BagSets (decoded at once, sharded over ``dist``'s
    ranks) and every sample carries ``weight`` (the loss's pixels) and ``ref`` / ``ref_mask`` (validation's
    reference): a render sample's are its mask and ground truth."""

    def __init__(self, specs: list[str], size: int, recenter: bool,
                 bags: tuple[BagReadConfig, TrustConfig] | None = None, dist: Distributed | None = None):
        tf = Compose(Recenter() if recenter else None, crop_to_square, lambda s: resize(s, size),
                     ReplaceBackground("white"))
        self.bag_mode = bags is not None
        self.sets = [BagSet(spec, size, *bags, dist=dist) if bags is not None and is_bag(spec)
                     else open_dataset(spec, tf) for spec in specs]
        self._cache: dict[tuple[int, int], dict] = {}

    def get(self, d: int, i: int) -> dict:
        if isinstance(self.sets[d], BagSet):
            return self.sets[d][i]
        if (d, i) not in self._cache:
            self._fill(d, i)
        return self._cache[(d, i)]

    def _fill(self, d: int, i: int) -> None:
        """Decode sample i with the rest of its shard: shards are compressed as a whole, so random access
        one sample at a time would decompress a shard per sample."""
        ds = self.sets[d]
        for j in ds.shard_range(i) if hasattr(ds, "shard_range") else (i,):
            if (d, j) not in self._cache:
                s = ds[j]
                if self.bag_mode:  # a render in a bag run: supervised by its ground truth on its mask
                    s = {**s, "weight": s["mask"][0], "ref": s["depth"], "ref_mask": s["mask"][0]}
                self._cache[(d, j)] = s

    def batch(self, items: list[tuple[int, int]], device) -> dict[str, torch.Tensor]:
        samples = [self.get(d, i) for d, i in items]
        keys = ("image", "depth", "mask", "K") + (("weight", "ref", "ref_mask") if self.bag_mode else ())
        return {k: torch.stack([s[k] for s in samples]).to(device) for k in keys}


def batch_items(seed: int, step: int, sizes: list[int], weights: list[float], batch: int) -> list[tuple[int, int]]:
    """The samples of one step, a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    p = np.asarray(weights, float) / sum(weights)
    ds = rng.choice(len(sizes), size=batch, p=p)
    return [(int(d), int(rng.integers(sizes[d]))) for d in ds]


def val_items(size: int, count: int) -> list[int]:
    """The paper's protocol: ``count`` random samples with seed 1338 (all of them when fewer)."""
    return sorted(np.random.default_rng(EVAL_SEED).permutation(size)[:count].tolist())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * (0.1 if step >= cfg.lr_drop_at * cfg.steps else 1.0)


class Trainer:
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
        self.step = 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.state_dir = Path(str(cfg.out) + ".state")

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
        """Trainable tensors + optimizer state (safetensors) and counters (JSON), written atomically."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.dist.main:  # rank 0 alone writes files
            return
        tensors = {f"param.{k}": v.detach().cpu().contiguous() for k, v in self.trainable.state_dict().items()}
        opt = self.opt.state_dict()
        for pid, st in opt["state"].items():
            for name, val in st.items():
                if isinstance(val, torch.Tensor):
                    tensors[f"opt.{pid}.{name}"] = val.detach().cpu().contiguous()
        scalars = {str(pid): {n: v for n, v in st.items() if not isinstance(v, torch.Tensor)}
                   for pid, st in opt["state"].items()}
        meta = {"step": self.step, "history": self.history, "best": self.best, "config": self.cfg.to_dict(),
                "supervision": self.supervision,
                "param_groups": opt["param_groups"], "opt_scalars": scalars,
                "distributed": self.dist.describe(self.cfg.batch)}
        # a complete, fsynced step directory under a new name first, then the LATEST pointer is replaced
        # atomically, and only then are older directories removed: the state LATEST names is never touched
        # (saving the same step twice, as a resume with --init-bias at step 0 does, included)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.state_dir))
        step_dir = self.state_dir / f"step-{self.step:07d}-{tmp.name.removeprefix('.tmp-')}"
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta))
        for f in ("state.safetensors", "state.json", "."):
            fsync_path(tmp / f)
        os.replace(tmp, step_dir)
        fsync_path(self.state_dir)
        atomic_write(self.state_dir / "LATEST", lambda p: Path(p).write_text(step_dir.name))
        for old in self.state_dir.glob("step-*"):
            if old != step_dir:
                shutil.rmtree(old, ignore_errors=True)

    def load_state(self) -> None:
        latest = self.state_dir / "LATEST"
        if not latest.is_file():
            raise FileNotFoundError(f"nothing to resume: {latest} does not exist")
        step_dir = self.state_dir / latest.read_text().strip()
        meta = json.loads((step_dir / "state.json").read_text())
        if meta["config"].get("prompt") == "single":  # states written before the name 1bg
            meta["config"]["prompt"] = "1bg"
        # states written before a field existed: the field at its default is the same run
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
        meta["config"] = {**{k: v for k, v in defaults.items() if k not in meta["config"]}, **meta["config"]}
        if meta["config"] != self.cfg.to_dict():
            diff = {k: (v, self.cfg.to_dict().get(k)) for k, v in meta["config"].items() if self.cfg.to_dict().get(k) != v}
            raise ConfigError(f"cannot resume {step_dir}: the run was started with other settings {diff}")
        tensors = load_file(str(step_dir / "state.safetensors"))
        self.trainable.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("param.")})
        state: dict = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v.to(self.device)
        for pid, sc in meta["opt_scalars"].items():
            state.setdefault(int(pid), {}).update(sc)
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
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

    def run(self, resume: bool = False, kill_at: int | None = None) -> dict:
        cfg = self.cfg
        if resume:
            self.load_state()
            log.info("resumed at step %d", self.step)
        writer = None
        if self.supervision is not None and self.dist.main:  # per run: what supervised the prompt
            self.state_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.state_dir / "supervision.json",
                         lambda p: Path(p).write_text(json.dumps(self.supervision, indent=1)))
        if cfg.logdir and self.dist.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(cfg.logdir)
            if self.supervision is not None:
                for k in ("objects", "supervised_pixels", "supervised_share", "trusted_share"):
                    writer.add_scalar(f"data/{k}", self.supervision[k], self.step)
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
                if kill_at is not None and self.step == kill_at and self.dist.rank == self.dist.world - 1:
                    # for tests: the last rank dies like a killed process (the only one without torchrun)
                    os.kill(os.getpid(), signal.SIGKILL)
        finally:
            bar.close()
        if writer:
            writer.close()
        seconds = time.perf_counter() - t0
        if self.dist.main and self.step > start:  # the loop's own time, for benchmarks (make bench)
            atomic_write(self.state_dir / "timing.json", lambda p: Path(p).write_text(json.dumps(
                {"steps": self.step - start, "seconds": seconds, **self.dist.describe(cfg.batch)})))
        return {"best": self.best, "seconds": seconds, "history": self.history, "supervision": self.supervision}

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


