"""Filling holes of a metric depth image: inpainting from the readings around them, normalized convolution.

Depth is in metres, 0 = no reading.
"""
from __future__ import annotations

import cv2
import numpy as np


def normalized_convolution(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalized convolution: the weighted Gaussian average of ``values`` at every pixel (NaN: no support)."""
    num = cv2.GaussianBlur(np.where(weight, values, 0).astype(np.float32), (0, 0), sigma)
    den = cv2.GaussianBlur(weight.astype(np.float32), (0, 0), sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 1e-3, num / den, np.nan)


def inpaint_mm(depth: np.ndarray, holes: np.ndarray, radius: int = 3, method: str = "ns") -> np.ndarray:
    """Fill ``holes`` of a metric depth image (m, 0 = none) with ``cv2.inpaint`` in whole MILLIMETRES (uint16:
    OpenCV 5.0's Telea returns garbage on float metres, opencv/opencv#25404, and is off by ~1 mm on float mm);
    the holes go as their own uint8 mask (zeros in the depth are not holes to it). Returns metres (float32)."""
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    z = np.nan_to_num(depth, nan=0.0)
    # every pixel without a reading near a hole is unknown too: cv2.inpaint would take its 0 as a depth
    near = cv2.dilate(holes.astype(np.uint8), np.ones((2 * radius + 3,) * 2, np.uint8)).astype(bool)
    mask = holes | (near & ~(z > 0))
    mm = np.clip(np.round(z * 1000), 0, 65535).astype(np.uint16)
    out = cv2.inpaint(mm, mask.astype(np.uint8), radius, flag).astype(np.float32) / np.float32(1000)
    return np.where(holes, out, z).astype(np.float32)


def interior_holes(holes: np.ndarray, obj: np.ndarray, max_pixels: float) -> np.ndarray:
    """Hole pixels in components (8-connected) that touch nothing outside ``obj`` and hold <= max_pixels."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(holes.shape, bool)
    outside = cv2.dilate((~obj).astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=1).astype(bool)
    touching = np.unique(lab[outside & holes])
    small = stats[:, cv2.CC_STAT_AREA] <= max_pixels
    small[0] = False
    small[touching] = False
    return small[lab]
