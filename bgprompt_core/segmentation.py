"""Object masks when none are given: rembg sessions (offline only) and mask cleanup."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .depth_networks import ModelLoadError


def rembg_home() -> Path:
    """rembg's model home: U2NET_HOME, else REMBG_HOME, else $XDG_DATA_HOME/rembg, else ~/.rembg."""
    for var in ("U2NET_HOME", "REMBG_HOME"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]) / "rembg"
    return Path("~/.rembg").expanduser()


def expected_model_paths(name: str) -> list[Path]:
    home = rembg_home()
    return [home / "models" / name / f"{name}.onnx", home / f"{name}.onnx"]


def clean_mask(prob: np.ndarray, threshold: float = 0.5, largest: bool = True, fill_holes: bool = True) -> np.ndarray:
    """Threshold a foreground probability (H, W) in [0, 1], keep the largest component, fill holes."""
    binary = (prob >= threshold).astype(np.uint8)
    if largest and binary.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        if n > 2:
            keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            binary = (labels == keep).astype(np.uint8)
    if fill_holes and binary.any():
        h, w = binary.shape
        flood = np.pad(binary, 1).copy()
        ff_mask = np.zeros((h + 4, w + 4), np.uint8)
        cv2.floodFill(flood, ff_mask, (0, 0), 1)  # background reachable from the border
        holes = flood[1:-1, 1:-1] == 0
        binary[holes] = 1
    return binary.astype(bool)


class RembgSegmenter:
    """``segment(image RGB uint8) -> bool mask``. Never downloads: a missing model is a clear error.

    ``model``: a rembg session name whose file is already in the model home (e.g. ``u2net``), or a path to
    an .onnx U-2-Net-style model inside the home (loaded as ``u2net_custom``).
    """

    def __init__(self, model: str = "u2net", threshold: float = 0.5):
        path = Path(model).expanduser()
        if path.suffix == ".onnx":
            if not path.is_file():
                raise ModelLoadError(f"rembg model file not found: {path}")
            name, kwargs = "u2net_custom", {"model_path": str(path)}
        else:
            found = [p for p in expected_model_paths(model) if p.is_file()]
            if not found:
                raise ModelLoadError(f"rembg model {model!r} is not installed; expected one of "
                                     f"{[str(p) for p in expected_model_paths(model)]} (set U2NET_HOME). "
                                     f"Robots never download it at run time.")
            name, kwargs = model, {}
        try:
            from rembg import new_session
        except (ImportError, SystemExit) as exc:  # plain `rembg` without onnxruntime exits on import
            raise ModelLoadError(f"rembg is not usable ({exc}); install `rembg[cpu]`") from exc
        self.session = new_session(name, **kwargs)
        self.threshold = threshold

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        out = self.session.predict(Image.fromarray(image))
        prob = np.asarray(out[0].convert("L"), np.float32) / 255.0
        if prob.shape != image.shape[:2]:
            prob = cv2.resize(prob, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        return clean_mask(prob, self.threshold)
