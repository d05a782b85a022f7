"""Per material: how many of the objects' sensor readings `train --data BAG` trusts, and how right they are.

Reads a `bgprompt render tabletop` directory (it knows each pixel's material and ground truth; a bag does not) and
applies the training's trust rules (bgprompt_training/data/trust.py) to each object as `bag make` + training
would see it. Prints a markdown table (docs/grasp/bag_trained.md):

    .venv/bin/python tools/bag_trust_report.py RENDER_DIR
    .venv/bin/python tools/bag_trust_report.py --figure OUT.png PROMPT [PROMPT ...]   # backgrounds side by side
    .venv/bin/python tools/bag_trust_report.py --compare RESULTS.json SENSOR_RUN TRUTH_RUN [START]  # eval-grasp
      (START: the warm start's method name, e.g. "1-BG", to measure against it instead of the best shipped prompt)
"""
from __future__ import annotations

import sys

import numpy as np

from bgprompt_core.evaluation.sensor_model import MATERIALS
from bgprompt_training.data.rendered import RenderedDataset
from bgprompt_training.data.trust import REASONS, trusted_pixels

TILE = 160  # px per prompt in --figure


def main(root: str) -> None:
    ds = RenderedDataset(root)
    rows = {m: {"objects": 0, "pixels": 0, "readings": 0, "trusted": 0, "trusted_ok": 0, "reading_ok": 0,
                "supervised_objects": 0, **{r: 0 for r in REASONS}} for m in MATERIALS}
    for i in range(len(ds)):
        a = ds.arrays(i, ("instance", "alpha", "material", "sensor_depth", "depth", "K"))
        labels = np.where(a["alpha"] > 0, a["instance"], 0)
        occupied = labels > 0
        for oid in np.unique(labels[labels > 0]):
            obj = labels == oid
            if obj.sum() < 16:
                continue
            mat = MATERIALS[int(np.bincount(a["material"][obj]).argmax())]
            trusted, counts = trusted_pixels(a["sensor_depth"], obj, a["K"], occupied,
                                             rng=np.random.default_rng([i, int(oid)]))
            has = obj & (a["sensor_depth"] > 0)
            ok = np.abs(a["sensor_depth"] - a["depth"]) <= 0.01  # within 1 cm of the truth
            r = rows[mat]
            r["objects"] += 1
            r["supervised_objects"] += int(counts["trusted"] >= 32)
            r["pixels"] += counts["object"]
            r["readings"] += int(has.sum())
            r["trusted"] += counts["trusted"]
            r["trusted_ok"] += int((trusted & ok).sum())
            r["reading_ok"] += int((has & ok).sum())
            for k in REASONS:
                r[k] += counts[k]
    print("| material | objects (with >= 32 trusted px) | readings / object px | trusted / object px | "
          "trusted within 1 cm of truth | all readings within 1 cm | left out: hole / see-through / edge / "
          "inconsistent (share of object px) |")
    print("|---|---|---|---|---|---|---|")
    for m, r in rows.items():
        if not r["objects"]:
            continue
        px = max(r["pixels"], 1)
        left = " / ".join(f"{100 * r[k] / px:.0f}%" for k in REASONS)
        print(f"| {m} | {r['objects']} ({r['supervised_objects']}) | {100 * r['readings'] / px:.0f}% | "
              f"{100 * r['trusted'] / px:.0f}% | {100 * r['trusted_ok'] / max(r['trusted'], 1):.0f}% | "
              f"{100 * r['reading_ok'] / max(r['readings'], 1):.0f}% | {left} |")


def figure(out: str, prompts: list[str]) -> None:
    """Each 1-BG prompt's background (Eq. 1's B), side by side, named; below, |B - B_first| x 4 (what changed)."""
    import cv2
    import torch

    from bgprompt_core.method.checkpoint import load_prompt
    from bgprompt_core.runtime.build import SHIPPED_PROMPTS

    tiles, diffs, first = [], [], None
    for name in prompts:
        path = SHIPPED_PROMPTS["mini"].get(name, name)
        prompt, _ = load_prompt(path)
        h, w = prompt.cfg.height, prompt.cfg.width
        with torch.no_grad():
            bg = prompt(torch.zeros(1, 1, h, w), torch.zeros(1, 3, h, w))[0].clamp(0, 1)
        tile = cv2.resize((bg.permute(1, 2, 0).numpy() * 255).astype(np.uint8), (TILE, TILE),
                          interpolation=cv2.INTER_NEAREST)
        b = bg.permute(1, 2, 0).numpy()
        first = b if first is None else first
        diffs.append(cv2.resize((np.clip(4 * np.abs(b - first), 0, 1) * 255).astype(np.uint8), (TILE, TILE),
                                interpolation=cv2.INTER_NEAREST))
        label = np.full((24, TILE, 3), 255, np.uint8)
        cv2.putText(label, str(name).rsplit("/", 1)[-1][:24], (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1)
        tiles.append(np.concatenate([label, tile], 0))
    img = np.concatenate([np.concatenate(tiles, 1), np.concatenate(diffs, 1)], 0)
    if not cv2.imwrite(out, cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {out}")


def compare(results: str, sensor_run: str, truth_run: str, start: str | None = None, boot: int = 1000) -> None:
    """Median Chamfer (mm) per material of every fused prompt in an eval-grasp results.json; the bag-trained
    prompt against the best shipped one, or against its warm start ``start`` (a method name such as "1-BG")
    (paired: the same objects; bootstrap 95% interval of the ratio of medians), and its share of the gain of the
    prompt trained on the same frames with ground truth over that same reference."""
    import json

    r = json.loads(open(results).read())
    rows = [x for x in r["rows"] if x["method"].endswith("+ fusion")]
    sensor_m, truth_m = f"{sensor_run} + fusion", f"{truth_run} + fusion"
    methods = sorted({x["method"] for x in rows if x["method"].split(" + ")[0] in
                      ("1-BG", "PNet", "tabletop 1-BG", "white", sensor_run, truth_run)})
    shipped = [m for m in methods if m.split(" + ")[0] in ("1-BG", "PNet", "tabletop 1-BG")]
    versus = "best shipped" if start is None else f"its warm start {start}"
    print("| material | objects | " + " | ".join(methods) + f" | bag-trained vs {versus} [95% CI] | "
          "share of the GT-trained gain |")
    print("|---|---|" + "---|" * (len(methods) + 2))
    rng = np.random.default_rng(0)
    for mat in MATERIALS:
        by = {}
        for x in rows:
            if x["material"] == mat:
                by.setdefault((x["set"], x["frame"], x["object"]), {})[x["method"]] = x["chamfer_mm"]
        keys = [k for k, v in by.items() if all(m in v for m in methods)]
        if not keys:
            continue
        a = {m: np.array([by[k][m] if by[k][m] is not None else np.inf for k in keys], float) for m in methods}
        med = {m: float(np.median(v)) for m, v in a.items()}
        best = min(shipped, key=lambda m: med[m]) if start is None else f"{start} + fusion"
        ratio = med[sensor_m] / med[best]
        idx = rng.integers(0, len(keys), (boot, len(keys)))
        ratios = np.median(a[sensor_m][idx], 1) / np.median(a[best][idx], 1)
        lo, hi = np.quantile(ratios, [0.025, 0.975])
        gain_gt = med[best] - med[truth_m]
        share = (med[best] - med[sensor_m]) / gain_gt if gain_gt > 0 else float("nan")
        cells = " | ".join(f"{med[m]:.2f}" for m in methods)
        print(f"| {mat} | {len(keys)} | {cells} | {ratio:.2f}x [{lo:.2f}, {hi:.2f}] vs {best} | "
              f"{'n/a (GT-trained did not gain)' if not gain_gt > 0 else f'{100 * share:.0f}%'} |")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(*sys.argv[2:6])
    elif sys.argv[1] == "--figure":
        figure(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1])
