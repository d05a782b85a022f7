"""Analytic test scenes with exact depth (ray casting, no renderer): a shaded sphere, a box standing on a table,
a bowl on a table."""
from __future__ import annotations

import numpy as np

from bgprompt_core.geometry import camera_rays


def box_on_table(K: np.ndarray, h: int, w: int, half=(0.05, 0.06, 0.04), height: float = 0.45, back: float = 0.45):
    """z-depth of the scene, of the table alone, and the box mask. World: table y = 0, box standing on it at the
    origin with half sizes ``half`` (x, y, z); camera at (0, height, back) looking at the origin."""
    half = np.asarray(half, float)
    eye = np.array([0.0, height, back])
    fwd = -eye / np.linalg.norm(eye)
    right = np.cross(fwd, [0, 1, 0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(fwd, right), fwd])  # rows: camera axes in the world
    d = camera_rays(K, h, w).astype(np.float64) @ R  # world direction per unit camera z
    with np.errstate(divide="ignore", invalid="ignore"):
        t_table = np.where(d[..., 1] < 0, -eye[1] / d[..., 1], np.inf)
        lo, hi = np.array([-half[0], 0, -half[2]]), np.array([half[0], 2 * half[1], half[2]])
        t0, t1 = (lo - eye) / d, (hi - eye) / d
    near = np.nanmax(np.minimum(t0, t1), -1)
    far = np.nanmin(np.maximum(t0, t1), -1)
    hit = (near <= far) & (near > 0)
    return np.minimum(np.where(hit, near, np.inf), t_table), t_table, hit


def bowl_on_table(K: np.ndarray, h: int, w: int, radius: float = 0.08, rim: float = 0.05, height: float = 0.45,
                  back: float = 0.35):
    """A bowl (a thin spherical shell of ``radius`` resting on the table at the origin, cut open at height ``rim``)
    seen from (0, height, back): z-depth of the scene, of the table alone, and the bowl's mask. Rays through the
    opening see its concave inside (the sphere's far intersection), the others its convex outside."""
    eye = np.array([0.0, height, back])
    fwd = -eye / np.linalg.norm(eye)
    right = np.cross(fwd, [0, 1, 0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(fwd, right), fwd])
    d = camera_rays(K, h, w).astype(np.float64) @ R  # world direction per unit camera z
    with np.errstate(divide="ignore", invalid="ignore"):
        t_table = np.where(d[..., 1] < 0, -eye[1] / d[..., 1], np.inf)
    c = np.array([0.0, radius, 0.0])
    oc = eye - c
    a = (d * d).sum(-1)
    b = (d @ oc)
    disc = b * b - a * (oc @ oc - radius**2)
    root = np.sqrt(np.clip(disc, 0, None))
    t1, t2 = (-b - root) / a, (-b + root) / a
    y1, y2 = eye[1] + t1 * d[..., 1], eye[1] + t2 * d[..., 1]
    outer = (disc > 0) & (y1 <= rim)
    inner = (disc > 0) & ~outer & (y2 <= rim)
    t = np.where(outer, t1, np.where(inner, t2, np.inf))
    hit = outer | inner
    return np.minimum(t, t_table), t_table, hit


def table_image(K: np.ndarray, h: int, w: int, table: np.ndarray, box: np.ndarray, glass: bool) -> np.ndarray:
    """uint8 RGB: a checkered table (squares of 5 cm in the camera frame), the box grey, or seen through."""
    pts = camera_rays(K, h, w) * np.where(np.isfinite(table), table, 10.0)[..., None]
    checker = ((np.floor(pts[..., 0] / 0.05) + np.floor(pts[..., 2] / 0.05)) % 2).astype(np.float32)
    img = np.stack([0.45 + 0.4 * checker, 0.35 + 0.3 * checker, 0.25 + 0.2 * checker], -1)
    img[box] = img[box] * np.array([0.85, 0.92, 0.95]) + 0.08 if glass else np.array([0.55, 0.6, 0.62])
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def sphere_sample(size: int, radius: float = 0.25, distance: float = 1.0, focal: float | None = None):
    """An analytic Lambert-shaded sphere: image (3,H,W) in [0,1], z-depth (H,W), mask (H,W), K (3,3)."""
    f = focal or 1.2 * size
    K = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]], dtype=np.float64)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    d = np.stack([(u - K[0, 2]) / f, (v - K[1, 2]) / f, np.ones_like(u)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    c = np.array([0.0, 0.0, distance])
    b = d @ c
    disc = b**2 - (c @ c - radius**2)
    hit = disc > 0
    t = np.where(hit, b - np.sqrt(np.clip(disc, 0, None)), np.nan)
    p = d * t[..., None]
    n = (p - c) / radius
    shade = np.clip(n @ np.array([-0.4, -0.5, -0.77]), 0, 1)
    rgb = np.where(hit[..., None], (0.25 + 0.7 * shade[..., None]) * np.array([0.9, 0.5, 0.2]), 1.0)
    depth = np.where(hit, p[..., 2], 0.0)
    return rgb.transpose(2, 0, 1).astype(np.float32), depth.astype(np.float32), hit.astype(np.float32), K
