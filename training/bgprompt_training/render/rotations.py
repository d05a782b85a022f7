"""Rotations and placements of the renderers' scenes (pure numpy): about an axis, a random one (a yaw, or
uniform on SO(3) from a unit quaternion), and the 4x4 world-from-object matrices of posed meshes and of
scaled planes."""
from __future__ import annotations

import numpy as np


def rot_x(a: float) -> np.ndarray:
    """Rotation by ``a`` radians about the x axis."""
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def rot_z(a: float) -> np.ndarray:
    """Rotation by ``a`` radians about the z axis."""
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def random_rotation(rng: np.random.Generator, upright: bool) -> np.ndarray:
    yaw = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    if not upright:
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return R


def pose(R: np.ndarray, scale: float, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R * scale
    T[:3, 3] = t
    return T


def surface(R: np.ndarray, sx: float, sz: float, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R @ np.diag([sx, 1.0, sz])
    T[:3, 3] = t
    return T
