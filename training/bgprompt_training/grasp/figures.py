"""The eval-grasp figures: side views of object clouds against the ground truth, and Chamfer by method."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bgprompt_core.evaluation import sensor_model as sm


def cloud_figure(clouds: list[dict], methods: list[str], path: Path, title: str) -> Path | None:
    """Side views of each object's clouds (GT in grey behind every panel), one row per object; None if empty."""
    if not clouds:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["gt"] + methods
    fig, axes = plt.subplots(len(clouds), len(cols), figsize=(2.4 * len(cols), 2.4 * len(clouds)), squeeze=False)
    for r, c in enumerate(clouds):
        up = c["up"] / np.linalg.norm(c["up"])
        side = np.cross(up, [0.0, 0.0, 1.0])
        side /= np.linalg.norm(side)
        centre = c["gt"].mean(0)
        view = lambda p: ((p - centre) @ side * 1e3, (p - centre) @ up * 1e3)  # noqa: E731
        gx, gy = view(c["gt"])
        for k, name in enumerate(cols):
            ax = axes[r, k]
            ax.scatter(gx, gy, s=0.5, c="0.8")
            pts = c.get(name, np.zeros((0, 3)))
            if name != "gt" and len(pts):
                x, y = view(pts)
                ax.scatter(x, y, s=0.5, c=np.clip((pts - centre) @ np.cross(side, up) * 1e3, -60, 60), cmap="coolwarm")
            ax.set_xlim(gx.min() - 30, gx.max() + 30)
            ax.set_ylim(gy.min() - 30, gy.max() + 30)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def chamfer_chart(summary: list[dict], methods: list[str], path: Path) -> Path:
    """Median Chamfer (log scale) per material and method, one panel per (set, sensor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos = sorted({(e["set"], e["sensor"]) for e in summary})
    fig, axes = plt.subplots(1, len(combos), figsize=(4.2 * len(combos), 3.6), squeeze=False)
    for ax, (set_, sensor) in zip(axes[0], combos):
        mats = [m for m in sm.MATERIALS if any(e["material"] == m and (e["set"], e["sensor"]) == (set_, sensor)
                                                for e in summary)]
        width = 0.8 / max(len(methods), 1)
        for k, method in enumerate(methods):
            vals = []
            for m in mats:
                e = next((e for e in summary if (e["set"], e["sensor"], e["material"], e["method"]) ==
                          (set_, sensor, m, method)), None)
                vals.append(e["chamfer_mm"] if e and np.isfinite(e["chamfer_mm"]) else np.nan)
            ax.bar(np.arange(len(mats)) + k * width, vals, width, label=method)
        ax.set_xticks(np.arange(len(mats)) + 0.4 - width / 2, mats, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"{set_} / {sensor}", fontsize=9)
        ax.set_ylabel("median Chamfer (mm)")
    axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
