"""``bgprompt pretrain``: train the embedded "off-the-shelf" depth network on rendered SCENES only.

Like MiDaS / DPT, the network predicts relative disparity, trained with a scale-and-shift-invariant
loss (Ranftl et al.): L1 between disparities normalized by median and mean absolute deviation, plus
multi-scale gradient matching. It never sees isolated objects; background prompting then adapts it.
The result is saved in Hugging Face layout (config.json, model.safetensors, preprocessor_config.json)
and loads through the same adapter path as hub models.

Data-parallel under torchrun (distributed.py): every rank draws the same global batch (and augmentation)
from the seeded generator and trains on its contiguous share through DistributedDataParallel. The loss's
pixel counts are summed over ranks, so the averaged gradient is the 1-process gradient of the global batch.
Validation is sharded and gathered; rank 0 writes the model and TensorBoard.
"""
from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bgprompt_core.method.config import ConfigError
from bgprompt_core.networks.loading import DepthNet, spec_from_configs
from bgprompt_core.method.metrics import abs_rel, delta1, scale_shift_align
from bgprompt_core.networks.normalization import Normalization

from .data.rendered import RenderedDataset
from .distributed import Distributed


def build_model(arch: dict):
    """A transformers depth model from the ``architecture`` block of a config such as configs/mini.json."""
    from transformers import AutoModelForDepthEstimation, BitConfig, DPTConfig

    if arch.get("model_type") != "dpt":
        raise ConfigError(f"unsupported architecture {arch.get('model_type')!r} (configs use model_type 'dpt')")
    cfg = DPTConfig(backbone_config=BitConfig(**arch["bit"]) if "bit" in arch else None, **arch["dpt"])
    cfg.bgprompt_output_kind = "relative_disparity"
    return AutoModelForDepthEstimation.from_config(cfg)


def ssi_normalize(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(d - median) / mean|d - median| over the mask, per sample (MiDaS's scale-shift normalization)."""
    out = []
    for x, m in zip(d, mask):
        v = x[m]
        t = v.median()
        s = (v - t).abs().mean().clamp_min(1e-6)
        out.append((x - t) / s)
    return torch.stack(out)


def _local(count: torch.Tensor) -> torch.Tensor:
    return count


def _share_of_global_count(count: torch.Tensor, world: int) -> torch.Tensor:
    """The global batch's pixel count divided by the world size. DDP averages gradients over the W ranks, so
    sum_r local_r / (global / W) / W is the gradient of the global batch's mean."""
    import torch.distributed as tdist

    count = count.detach().clone()
    tdist.all_reduce(count)
    return count / world


def gradient_matching(diff: torch.Tensor, mask: torch.Tensor, scales: int, total_of=_local) -> torch.Tensor:
    """Multi-scale gradient matching of the normalized residual (MiDaS, Eq. 11).

    ``total_of`` turns this batch's pixel count into the count the sums are divided by (the global batch's
    under torchrun)."""
    total = diff.new_zeros(())
    for k in range(scales):
        step = 2**k
        r, m = diff[:, ::step, ::step], mask[:, ::step, ::step].float()
        gx = (r[:, :, 1:] - r[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]
        gy = (r[:, 1:] - r[:, :-1]).abs() * m[:, 1:] * m[:, :-1]
        total = total + (gx.sum() + gy.sum()) / total_of(m.sum()).clamp_min(1)
    return total / scales


def ssi_loss(pred: torch.Tensor, disp: torch.Tensor, mask: torch.Tensor, grad_weight: float, scales: int,
             total_of=_local):
    p, g = ssi_normalize(pred, mask), ssi_normalize(disp, mask)
    diff = (p - g) * mask
    l1 = diff.abs().sum() / total_of(mask.sum()).clamp_min(1)
    return l1 + grad_weight * gradient_matching(p - g, mask, scales, total_of), l1


def _load_all(ds: RenderedDataset) -> tuple[torch.Tensor, torch.Tensor]:
    rgb = np.stack([ds.raw(i)["rgb"] for i in range(len(ds))])
    depth = np.stack([ds.raw(i)["depth"] for i in range(len(ds))])
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(depth)


@torch.no_grad()
def scene_quality(net: DepthNet, rgb: torch.Tensor, depth: torch.Tensor, batch: int = 32,
                  dist: Distributed = Distributed()) -> dict[str, float]:
    """AbsRel and delta<1.25 of 1/(s * disparity + t), (s, t) fitted to GT disparity per image.

    Under torchrun each rank scores every W-th image; the per-image figures are gathered and averaged in image
    order (the 1-process result)."""
    phi = net.normalization
    mine = np.arange(dist.rank, len(rgb), dist.world)
    rels, d1s = [], []
    for i in range(0, len(mine), batch):
        idx = torch.from_numpy(mine[i:i + batch])
        x = phi(rgb[idx].float() / 255)
        d = depth[idx]
        valid = (d > 0).float()
        disp = net(x)
        aligned = scale_shift_align(disp, 1.0 / d.clamp_min(1e-6), valid)
        pred_depth = 1.0 / aligned.clamp_min(1.0 / 100)
        rels.append(abs_rel(pred_depth, d.clamp_min(1e-6), valid))
        d1s.append(delta1(pred_depth, d.clamp_min(1e-6), valid))
    per_image = dict(zip(mine.tolist(), zip(torch.cat(rels).tolist(), torch.cat(d1s).tolist()))) if rels else {}
    merged = {k: v for part in dist.gather(per_image) for k, v in part.items()}
    values = torch.tensor([merged[k] for k in sorted(merged)], dtype=torch.float32)
    return {"abs_rel": float(values[:, 0].mean()), "delta1": float(values[:, 1].mean())}


def save_hf(model, out: Path, config: dict, metrics: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    size = config["input"]["size"]
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "DPTImageProcessor", "do_normalize": True, "do_rescale": True,
        "image_mean": config["input"]["image_mean"], "image_std": config["input"]["image_std"],
        "size": {"height": size, "width": size}, "ensure_multiple_of": 16, "keep_aspect_ratio": False}, indent=2))
    (out / "training.json").write_text(json.dumps({"config": config, "metrics": metrics}, indent=2))


def pretrain(config_path: str | Path, train_dir: str, val_dir: str, out: str | Path, steps: int | None = None,
             log_dir: str | None = None, dist: Distributed = Distributed()) -> dict:
    config = json.loads(Path(config_path).read_text())
    tc = config["training"]
    steps = steps or tc["steps"]
    torch.manual_seed(tc["seed"])
    if not dist.active:  # under torchrun, OMP_NUM_THREADS (1 per process by default) decides
        torch.set_num_threads(tc.get("threads", 2))
    gen = torch.Generator().manual_seed(tc["seed"])
    model = build_model(config["architecture"])
    trained, total_of = _data_parallel(model, dist)
    phi = Normalization(tuple(config["input"]["image_mean"]), tuple(config["input"]["image_std"]))
    train_rgb, train_depth = _load_all(RenderedDataset(train_dir))
    val_rgb, val_depth = _load_all(RenderedDataset(val_dir))
    size = config["input"]["size"]
    if train_rgb.shape[-1] != size:
        raise ConfigError(f"training renders are {train_rgb.shape[-1]}px, the config expects {size}px")
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    sched = _warmup_cosine(opt, tc, steps)
    writer = None
    if log_dir and dist.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir)
    spec = spec_from_configs("mini", "", {**model.config.to_dict()}, {"image_mean": config["input"]["image_mean"],
                                                                      "image_std": config["input"]["image_std"],
                                                                      "size": {"height": size, "width": size}})
    history = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="pretrain", unit="step", disable=not dist.main)
    for step in bar:
        model.train()
        rgb, depth = _augmented_batch(train_rgb, train_depth, tc["batch"], gen, dist)
        mask = depth > 0
        disp = torch.where(mask, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))
        pred = trained(pixel_values=phi(rgb)).predicted_depth
        loss, l1 = ssi_loss(pred, disp, mask, tc["grad_weight"], tc["grad_scales"], total_of)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_value, l1_value = dist.mean(loss.item()), dist.mean(l1.item())  # the global batch's (see total_of)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if writer:
            writer.add_scalar("train/loss", loss_value, step)
            writer.add_scalar("train/l1", l1_value, step)
        if (step + 1) % tc["val_every"] == 0 or step + 1 == steps:
            q = _validate(model, spec, val_rgb, val_depth, dist, step + 1, writer)
            history.append({"step": step + 1, "loss": loss_value, **q, "seconds": time.perf_counter() - t0})
    model.eval()
    metrics = {"val_scenes": len(val_rgb), "train_scenes": len(train_rgb), "steps": steps,
               "train_seconds": time.perf_counter() - t0, "history": history, **history[-1]}
    if dist.main:
        save_hf(model, Path(out), config, {**metrics, "distributed": dist.describe(tc["batch"])} if dist.active
                else metrics)
    if writer:
        writer.close()
    return metrics


def _data_parallel(model, dist: Distributed):
    """The module the steps run (DDP under torchrun) and the pixel-count total of the loss (global under DDP)."""
    trained, total_of = model, _local
    if dist.world > 1:  # one process has nothing to synchronise
        from torch.nn.parallel import DistributedDataParallel as DDP

        total_of = functools.partial(_share_of_global_count, world=dist.world)
        trained = DDP(model, find_unused_parameters=True)  # transformers models leave some heads unused
    return trained, total_of


def _warmup_cosine(opt: torch.optim.Optimizer, tc: dict, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``tc["warmup"]`` steps times a cosine decay to 0 at ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / tc["warmup"]) *
                                             0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


def _augmented_batch(train_rgb: torch.Tensor, train_depth: torch.Tensor, batch: int, gen: torch.Generator,
                     dist: Distributed) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's global batch (drawn from ``gen`` on every rank: random scenes, flips and brightness), then this
    rank's contiguous share of it."""
    idx = torch.randint(len(train_rgb), (batch,), generator=gen)  # the global batch, on every rank
    rgb, depth = train_rgb[idx].float() / 255, train_depth[idx]
    flip = torch.rand(len(idx), generator=gen) < 0.5
    rgb[flip], depth[flip] = rgb[flip].flip(-1), depth[flip].flip(-1)
    rgb = (rgb * (0.8 + 0.4 * torch.rand(len(idx), 3, 1, 1, generator=gen))).clamp(0, 1)
    share = dist.shard(list(range(len(idx))))  # this rank's contiguous share
    return rgb[share[0]:share[-1] + 1], depth[share[0]:share[-1] + 1]


def _validate(model, spec, val_rgb: torch.Tensor, val_depth: torch.Tensor, dist: Distributed, step: int,
              writer) -> dict:
    """Scene quality on the held-out scenes after ``step`` steps, printed and logged by rank 0."""
    model.eval()
    q = scene_quality(DepthNet(model, spec, frozen=False), val_rgb, val_depth, dist=dist)
    model.requires_grad_(True)
    if dist.main:
        tqdm.write(f"step {step}: val AbsRel {q['abs_rel']:.4f} delta1 {q['delta1']:.4f}")
    if writer:
        writer.add_scalar("val/abs_rel", q["abs_rel"], step)
        writer.add_scalar("val/delta1", q["delta1"], step)
    return q
