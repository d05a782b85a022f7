"""``bgprompt eval``: one network under several conditions on several data sets, the paper's way.

Conditions: no prompt on white / original / noise / random-image backgrounds (Table S3), finetuned
networks (the baseline), 1-BG and PNet prompt checkpoints (Tables 1-3), each prompt also with the other
Eq. 2 range, and two references that need no network: ``flat`` (constant depth) and ``oracle-shift``
(the white-background output with its disparity scale and shift fitted to GT). Protocol: 300 samples
drawn with seed 1338 per data set, GT masked mean 5. Writes a markdown table, CSV and JSON.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bgprompt_core.method.checkpoint import load_prompt
from bgprompt_core.method.config import ConfigError
from bgprompt_core.networks.loading import DepthNet, load_depth_net
from bgprompt_core.evaluation.protocol import flat_depth, oracle_shift, sample_metrics
from bgprompt_core.method.model import PromptedDepth

from .data.open import open_dataset
from .data.transforms import Compose, Recenter, ReplaceBackground, crop_to_square, resize
from .train.samples import val_items

METRICS = ("si_rmse", "normal_cos", "shape_err", "skill", "collapse_fraction", "abs_rel", "abs_rel_ss")


@dataclass
class Condition:
    name: str
    kind: str  # background | finetune | prompt | flat | oracle
    model: PromptedDepth | None = None
    background: str = "white"


def build_conditions(model: str, backgrounds: list[str], prompts: list[str], finetuned: list[str],
                     eq2_variants: bool, local_only: bool, device) -> tuple[DepthNet, list[Condition]]:
    base = load_depth_net(model, device, local_only=local_only)
    conds = [Condition("flat", "flat")]
    for bg in backgrounds:
        name = f"none ({Path(bg).name if bg not in ('white', 'original', 'noise') else bg})"
        conds.append(Condition(name, "background", PromptedDepth(base), bg))
    if base.spec.output_kind == "relative_disparity":
        conds.append(Condition("oracle-shift (white)", "oracle", PromptedDepth(base)))
    for d in finetuned:
        net = load_depth_net(d, device, local_only=True)
        if net.spec.input_size != base.spec.input_size:
            raise ConfigError(f"finetuned {d} expects {net.spec.input_size}, the base network {base.spec.input_size}")
        conds.append(Condition(f"finetune ({Path(d).name})", "finetune", PromptedDepth(net)))
    for ckpt in prompts:
        prompt, meta = load_prompt(ckpt, base.spec)
        kind = "PNet" if meta.prompt.kind == "pnet" else ("1-BG" if meta.prompt.kind == "fourier" else "1-BG pixel")
        ranges = [meta.depth_transform.range]
        if eq2_variants and base.spec.output_kind == "relative_disparity":
            ranges += [r for r in ("image", "object") if r not in ranges]
        for r in ranges:
            tf = dataclasses.replace(meta.depth_transform, range=r)
            suffix = "" if r == meta.depth_transform.range else f", Eq.2 {r}"
            conds.append(Condition(f"{kind} ({Path(ckpt).stem}{suffix})", "prompt",
                                   PromptedDepth(base, prompt.to(device).eval(), meta.composite, tf)))
    return base, conds


def _load(spec: str, size: int, background: str, recenter: bool, count: int):
    mode, folder = (background, None) if background in ("white", "original", "noise") else ("folder", background)
    tf = Compose(Recenter() if recenter else None, crop_to_square, lambda s: resize(s, size),
                 ReplaceBackground(mode, folder))
    ds = open_dataset(spec, tf)
    idx = val_items(len(ds), count)
    samples = [ds[i] for i in idx]
    return {k: torch.stack([s[k] for s in samples]) for k in ("image", "depth", "mask", "K")}


@torch.no_grad()
def evaluate(model: str, datasets: list[str], prompts: list[str] = (), backgrounds: list[str] = ("white",),
             finetuned: list[str] = (), count: int = 300, batch: int = 16, eq2_variants: bool = True,
             recenter: bool = False, local_only: bool = False, figures: Path | None = None, figure_count: int = 4,
             device: str = "cpu") -> list[dict]:
    """Rows ``{condition, dataset, count, si_rmse, normal_cos, shape_err, skill, collapse_fraction, ...}``."""
    base, conds = build_conditions(model, list(backgrounds), list(prompts), list(finetuned), eq2_variants,
                                   local_only, device)
    size = base.spec.input_size[0]
    rows = []
    for spec in datasets:
        cache: dict[str, dict] = {}
        per: dict[str, dict[str, list]] = {}
        fig_rows: dict[int, list] = {}
        for cond in tqdm(conds, desc=f"eval {Path(spec).name}", unit="cond"):
            bg = cond.background if cond.kind == "background" else "white"
            if bg not in cache:
                cache[bg] = _load(spec, size, bg, recenter, count)
            data = cache[bg]
            n = len(data["image"])
            for s in range(0, n, batch):
                b = {k: v[s:s + batch].to(device) for k, v in data.items()}
                m = b["mask"][:, 0]
                depth, comp = _condition_depth(cond, b, m)
                metrics = sample_metrics(depth.float().cpu(), b["depth"].cpu(), m.cpu(), b["K"].cpu())
                for k, v in metrics.items():
                    per.setdefault(cond.name, {}).setdefault(k, []).extend(v.tolist())
                if figures is not None:
                    _figure_tiles(fig_rows, cond, b, m, comp, depth, s, figure_count)
        rows += _dataset_rows(conds, per, spec)
        if figures is not None:
            from .figures import write_png

            for i, tiles in fig_rows.items():
                write_png(figures / f"{Path(spec).name}_{i:03d}.png", np.concatenate(tiles, 0))
    if figures is not None:
        prompt_figures(base, conds, figures, size, device)
    return rows


def _condition_depth(cond, b: dict, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's depth under condition ``cond`` and the composite image the network saw."""
    if cond.kind == "flat":
        return flat_depth(m), b["image"]
    # no-prompt conditions see the image as it is (white, original or replaced background)
    keep = b["image"] if cond.kind in ("background", "oracle", "finetune") else None
    out = cond.model(b["image"], b["mask"], background=keep)
    depth = out["depth"]
    comp = cond.model.net.normalization.inverse(out["composite"]).clamp(0, 1)
    if cond.kind == "oracle":
        depth = oracle_shift(out["raw"], b["depth"], m)
    return depth, comp


def _figure_tiles(fig_rows: dict[int, list], cond, b: dict, m: torch.Tensor, comp: torch.Tensor, depth: torch.Tensor,
                  s: int, figure_count: int) -> None:
    """The Figure 5 tiles of the batch starting at sample ``s`` (the ground truth first, with the flat condition)."""
    from .figures import figure5_row

    for j in range(min(figure_count - s, len(depth))):
        if cond.kind == "flat":  # the first condition: put the ground truth on top
            fig_rows.setdefault(s + j, []).append(figure5_row(
                "ground truth", b["image"][j].cpu(), b["image"][j].cpu(), b["depth"][j].float().cpu(),
                b["K"][j].cpu(), m[j].cpu()))
        fig_rows.setdefault(s + j, []).append(figure5_row(
            cond.name, b["image"][j].cpu(), comp[j].cpu(), depth[j].float().cpu(),
            b["K"][j].cpu(), m[j].cpu()))


def _dataset_rows(conds: list, per: dict[str, dict[str, list]], spec: str) -> list[dict]:
    """One row per condition on data set ``spec``: the per-sample metrics' means and the skill vs flat."""
    rows = []
    flat_si = float(np.mean(per["flat"]["si_rmse"]))
    for cond in conds:
        p = per[cond.name]
        row = {"condition": cond.name, "dataset": spec, "count": len(p["si_rmse"])}
        for k, v in p.items():
            row["collapse_fraction" if k == "collapsed" else k] = float(np.mean(v))
        row["skill"] = 1.0 - row["si_rmse"] / flat_si if flat_si > 0 else float("nan")
        rows.append(row)
    return rows


@torch.no_grad()
def prompt_figures(base: DepthNet, conds: list[Condition], out: Path, size: int, device) -> None:
    """Figure 6: each prompt alone (an empty mask) and the normals the network predicts for it."""
    from .figures import label, normal_map, to_rgb8, write_png

    f = size * 1.2
    K = torch.tensor([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1.0]])
    centre = torch.zeros(1, 1, size, size, device=device)
    centre[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1  # PNet needs a mask: a centred square
    prompt_conds = [c for c in conds if c.kind == "prompt" and "Eq.2" not in c.name]
    for k, cond in enumerate(prompt_conds):
        bg = cond.model.prompt(centre, torch.ones(1, 3, size, size, device=device))
        raw = base(base.normalization(bg))
        depth = 1.0 / (raw - raw.min() + 1e-3 * (raw.max() - raw.min()))[0].cpu()  # display only
        tile = np.concatenate([label(to_rgb8(bg[0].cpu()), cond.name[:28]), normal_map(depth, K)], 1)
        write_png(out / f"prompt_{k}_{cond.name.split(' ')[0]}.png", tile)


def scene_drift(model: str, finetuned: list[str], scenes: str, local_only: bool, device) -> list[dict]:
    """Scene quality (AbsRel, delta<1.25 after scale-shift alignment in disparity) of the base network and of
    each finetuned one on held-out SCENES: what finetuning costs the network's original skill."""
    from .data.rendered import RenderedDataset
    from .pretrain import _load_all, scene_quality

    rgb, depth = _load_all(RenderedDataset(scenes))
    rows = []
    for name, src, local in [("base", model, local_only)] + [(f"finetune ({Path(d).name})", d, True) for d in finetuned]:
        net = load_depth_net(src, device, local_only=local)
        rows.append({"network": name, "scenes": len(rgb), **scene_quality(net, rgb.to(device), depth.to(device))})
    return rows


def markdown_table(rows: list[dict]) -> str:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    by = {(r["condition"], r["dataset"]): r for r in rows}
    head = "| condition | " + " | ".join(f"{Path(d).name}: si-RMSE ↓ | cos ↑ | shape ↓ | skill ↑ | collapsed"
                                         for d in datasets) + " |"
    sep = "|---|" + "---|---|---|---|---|" * len(datasets)
    lines = [head, sep]
    for c in conds:
        cells = []
        for d in datasets:
            r = by[(c, d)]
            cells.append(f"{r['si_rmse']:.3f} | {r['normal_cos']:.3f} | {r['shape_err']:.4f} | {r['skill']:+.2f} | "
                         f"{100 * r['collapse_fraction']:.0f}%")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    n = sorted({r["count"] for r in rows})
    lines.append("")
    lines.append(f"Samples per data set: {', '.join(map(str, n))} (seed 1338). si-RMSE: Eq. 3 with GT masked mean 5. "
                 "cos: normal cosine after scale alignment. shape: scale-and-shift-aligned disparity RMSE (blind to "
                 "Eq. 2). skill: 1 - si-RMSE / si-RMSE(flat). collapsed: objects whose aligned depth std is < 1% of GT's.")
    return "\n".join(lines)


def write_outputs(rows: list[dict], out_dir: Path | None, json_path: Path | None) -> str:
    table = markdown_table(rows)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.md").write_text(table + "\n")
        with open(out_dir / "results.csv", "w", newline="") as f:
            keys = ["condition", "dataset", "count", *METRICS]
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"rows": rows}, indent=2))
    return table
