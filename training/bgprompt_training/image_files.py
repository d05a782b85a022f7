"""Image and mask files as `bgprompt predict` reads them: one orientation rule for both, every mask kind named.

Orientation: both files are read as an image viewer shows them, i.e. with their own EXIF orientation applied (what
``cv2.imread(IMREAD_COLOR)`` does to the image, and ``IMREAD_UNCHANGED`` silently did not do to the mask). The same
function rotates both, and a file whose orientation is not 1 is reported, since the intrinsics must then describe
the image as displayed.

Masks (``read_mask``), each interpretation reported in one line:
- palette PNG (VOC, DAVIS): the palette indices are instance labels (0 background, 255 VOC's void border ignored);
- RGBA / grey+alpha cut-out: the alpha channel is a soft mask;
- 8-bit grey: one value besides 0 is one object; several values without 255 are instance labels (1, 2, ...);
  several values with 255 are a soft (anti-aliased) mask, value / 255;
- 16-bit grey: instance labels; colour without alpha: each distinct non-black colour is an object (at most 255
  colours, else it is a photo, not a mask); ``.npy``: the array as it is (bool, soft float, integer labels).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bgprompt_core.frame.masks import InputError

ORIENTATION_TAG = 0x0112
_ORIENTED = {  # EXIF orientation -> the array as displayed (ImageOps.exif_transpose's rule)
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
ROTATION_WORDS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped", 5: "transposed", 6: "rotated 90 degrees "
                  "clockwise", 7: "transversed", 8: "rotated 90 degrees counter-clockwise"}


def exif_orientation(path: str | Path) -> int:
    """The file's EXIF orientation (1..8; 1 when it has none or PIL cannot open it). Reads the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            value = im.getexif().get(ORIENTATION_TAG, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 1
    return value if value in _ORIENTED else 1


def displayed(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (H, W, ...) as a viewer shows it for EXIF ``orientation``."""
    return np.ascontiguousarray(_ORIENTED[orientation](array))


def read_image(path: str | Path) -> tuple[np.ndarray, int]:
    """(RGB uint8 (H, W, 3) as displayed, EXIF orientation). FileNotFoundError when unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    orientation = exif_orientation(path)
    return displayed(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), orientation), orientation


def read_mask(path: str | Path) -> tuple[np.ndarray, str, int]:
    """(mask for ``split_mask``, how it was read, EXIF orientation); the mask is as displayed, like the image."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            mask = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read mask {path} as a numpy array ({exc})") from exc
        if mask.ndim != 2:
            raise InputError(f"mask {path}: a .npy mask must be (H, W), got shape {mask.shape}")
        return mask, f"array ({mask.dtype})", 1
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(ORIENTATION_TAG, 1)
            orientation = orientation if orientation in _ORIENTED else 1
            mode, palette = im.mode, im.mode == "P"
            raw = np.asarray(im)
            alpha = np.asarray(im.getchannel("A")) if mode in ("RGBA", "LA", "PA") else None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # formats PIL lacks
        if raw is None:
            raise FileNotFoundError(f"cannot read mask {path}") from None
        orientation, mode, palette, alpha = 1, "cv2", False, None
        if raw.ndim == 3 and raw.shape[2] == 4:
            raw, alpha = raw[..., :3][..., ::-1], raw[..., 3]
    if alpha is not None:
        mask, how = _soft(alpha, f"{mode} alpha channel")
    elif palette:
        mask, how = _labels(raw.astype(np.uint16), "palette indices", ignore=255)
    else:
        mask, how = _from_values(raw, path)
    return displayed(mask, orientation), how, orientation


def _soft(values: np.ndarray, how: str) -> tuple[np.ndarray, str]:
    if values.dtype == np.uint8 and set(np.unique(values).tolist()) <= {0, 255}:
        return values, f"{how}, binary"
    return values.astype(np.float32) / float(np.iinfo(values.dtype).max), f"{how} as a soft mask"


def _labels(labels: np.ndarray, how: str, ignore: int | None = None) -> tuple[np.ndarray, str]:
    if ignore is not None:
        labels = np.where(labels == ignore, 0, labels)
    ids = np.unique(labels[labels != 0]).tolist()
    shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
    labels = labels.astype(np.uint16 if not ids or ids[-1] <= 65535 else np.int64)
    return labels, f"{how} as instance labels {shown} ({len(ids)} objects)"


def _from_values(raw: np.ndarray, path: Path) -> tuple[np.ndarray, str]:
    if raw.dtype == bool:
        return raw, "binary"
    if raw.ndim == 3:
        if raw.shape[2] == 1 or (raw == raw[..., :1]).all():
            raw = raw[..., 0]  # grey stored as colour
        else:
            colours, inverse = np.unique(raw.reshape(-1, raw.shape[2]), axis=0, return_inverse=True)
            black = np.flatnonzero((colours == 0).all(1))
            if len(colours) - len(black) > 255:
                raise InputError(f"mask {path} has {len(colours)} colours: that is a photo, not a mask. Give a "
                                 f"binary, label, palette or alpha mask")
            labels = inverse.reshape(raw.shape[:2]) + 1
            if len(black):
                labels[labels == black[0] + 1] = 0
            return _labels(labels, "distinct colours")
    values = np.unique(raw[raw != 0]).tolist()
    if raw.dtype == np.uint8:
        if len(values) <= 1:
            return raw, "binary"
        if 255 in values:
            return _soft(raw, "8-bit grey")
        return _labels(raw, "8-bit grey values")
    if np.issubdtype(raw.dtype, np.integer):
        return _labels(raw, f"{raw.dtype} values")
    if np.issubdtype(raw.dtype, np.floating):
        return raw.astype(np.float32), "float soft mask"
    raise InputError(f"mask {path}: unsupported pixel type {raw.dtype}")
