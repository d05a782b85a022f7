"""Object masks when none are given: rembg sessions (offline only) and mask cleanup. Needs no torch."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from bgprompt_core.errors import ModelLoadError
from bgprompt_core.settings import REMBG_OFFLINE_MODELS


def rembg_home() -> Path:
    """rembg 2.0.86's model root (BaseSession.rembg_home): U2NET_HOME, else REMBG_HOME, else $XDG_DATA_HOME/rembg,
    else ~/.rembg. Models are read from ``<root>/models/<name>/<name>.onnx``."""
    if os.environ.get("U2NET_HOME"):
        return legacy_home()
    xdg = os.environ.get("XDG_DATA_HOME")
    default = os.path.join(xdg, "rembg") if xdg else os.path.join("~", ".rembg")
    return Path(os.path.expanduser(os.environ.get("REMBG_HOME", default)))


def legacy_home() -> Path:
    """rembg's old flat directory, still read (BaseSession.legacy_home): U2NET_HOME, else $XDG_DATA_HOME/.u2net, else
    ~/.u2net. Models are read from ``<dir>/<name>.onnx``."""
    return Path(os.path.expanduser(os.environ.get("U2NET_HOME")
                                   or os.path.join(os.environ.get("XDG_DATA_HOME", "~"), ".u2net")))


def expected_model_paths(name: str) -> list[Path]:
    """Exactly the files rembg 2.0.86 looks for before it downloads model ``name`` (resolve_existing)."""
    fname = f"{name}.onnx"
    return [rembg_home() / "models" / name / fname, legacy_home() / fname]


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
            # rembg's own test (validate_model_path): the absolute path, symlinks not followed, under either root
            roots = [Path(os.path.abspath(r)) for r in (rembg_home(), legacy_home())]
            if not any(Path(os.path.abspath(path)).is_relative_to(r) for r in roots):
                raise ModelLoadError(f"rembg loads custom models only from inside its model directories "
                                     f"{[str(r) for r in roots]}: move {path} there (or set U2NET_HOME to its folder)")
            name, kwargs = "u2net_custom", {"model_path": str(path)}
        elif model not in REMBG_OFFLINE_MODELS:
            raise ModelLoadError(f"rembg model {model!r} cannot run offline here: use one of "
                                 f"{list(REMBG_OFFLINE_MODELS)} or a path to a U-2-Net-style .onnx file")
        else:
            found = [p for p in expected_model_paths(model) if p.is_file()]
            if not found:
                raise ModelLoadError(f"rembg model {model!r} is not installed; rembg reads it from one of "
                                     f"{[str(p) for p in expected_model_paths(model)]} (U2NET_HOME, REMBG_HOME or "
                                     f"XDG_DATA_HOME move them). Robots never download it at run time.")
            name, kwargs = model, {}
        try:
            from rembg import new_session
        except (ImportError, SystemExit) as exc:  # plain `rembg` without onnxruntime exits on import
            raise ModelLoadError(f"rembg is not usable ({exc}); install `rembg[cpu]`") from exc
        try:
            self.session = new_session(name, **kwargs)
        except Exception as exc:  # onnxruntime cannot read the file: corrupt or not an ONNX model
            raise ModelLoadError(f"rembg cannot load model {model!r} ({type(exc).__name__}: {str(exc)[:300]})") \
                from exc
        self.threshold = threshold

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        out = self.session.predict(Image.fromarray(image))
        prob = np.asarray(out[0].convert("L"), np.float32) / 255.0
        if prob.shape != image.shape[:2]:
            prob = cv2.resize(prob, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        return clean_mask(prob, self.threshold)
