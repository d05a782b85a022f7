"""Cameras in the OpenCV / ROS optical convention: x right, y down, z forward; world is y-up."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ABO_FOCAL_512 = 443.405  # ABO renders: focal length in pixels at 512 x 512


def intrinsics(size: tuple[int, int], focal: float) -> np.ndarray:
    """Pinhole K with the principal point at the image centre ((W-1)/2, (H-1)/2)."""
    h, w = size
    return np.array([[focal, 0, (w - 1) / 2], [0, focal, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0]),
            roll: float = 0.0) -> np.ndarray:
    """cam_from_world (4x4) of a camera at ``eye`` looking at ``target``; ``roll`` in radians about z."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)  # right = forward x up in a y-up world gives image-right
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # down
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    c, s = np.cos(roll), np.sin(roll)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ R
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye
    return T


@dataclass
class View:
    """Everything about one image except the geometry: camera, size and lighting (camera frame)."""

    K: np.ndarray
    cam_from_world: np.ndarray
    height: int
    width: int
    light_dir: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.6, 0.75]))  # direction light travels
    ambient: float = 0.35
    diffuse: float = 0.65
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    near: float = 0.01
    far: float = 100.0

    def __post_init__(self) -> None:
        self.light_dir = np.asarray(self.light_dir, float) / np.linalg.norm(self.light_dir)
