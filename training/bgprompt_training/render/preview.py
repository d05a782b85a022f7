"""Contact sheets of rendered samples: RGB | depth | normals | mask, one row per sample."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bgprompt_core.evaluation.colormaps import depth_to_color, normals_to_color


def contact_sheet(samples: list[dict], path: str | Path) -> Path:
    rows = []
    for s in samples:
        mask = np.repeat(s["mask"][..., None].astype(np.uint8) * 255, 3, -1)
        rows.append(np.concatenate([s["rgb"], depth_to_color(s["depth"]), normals_to_color(s["normals"]), mask], 1))
    sheet = np.concatenate(rows, 0)
    path = Path(path)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path
