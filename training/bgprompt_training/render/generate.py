"""Sample generators: ABO-like single objects and indoor-like scenes, each a pure function of (seed, index).

A sample is a dict of numpy arrays:
- ``rgb`` (H, W, 3) uint8; ``alpha`` (H, W) uint8 (objects: 255 on the object, so other backgrounds can
  be composited later); ``depth`` (H, W) float32 z-depth in metres, 0 where there is no surface;
- ``mask`` (H, W) bool foreground (objects: the object; scenes: the placed objects, not room or tables);
- ``normals`` (H, W, 3) float32 unit normals in the camera optical frame facing the camera, 0 = none;
- ``instance`` (H, W) int32 (0 = none); ``K`` (3, 3) float64; ``cam_from_world`` (4, 4) float64 (world y-up);
- ``object_id`` str.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bgprompt_core.method.config import ConfigError
from bgprompt_core.errors import Unavailable

from .camera import ABO_FOCAL_512, View, intrinsics, look_at
from .meshes import FAMILIES, Mesh, box, load_mesh_file, plane_grid, random_shape
from .packing import pack_sample, sample_rng
from .raster import Frame, Instance, render_numpy
from .rotations import pose, random_rotation, rot_x, rot_z, surface
from .textures import MaterialImages, procedural_texture

KINDS = ("objects", "scenes", "tabletop")


@dataclass(frozen=True)
class RenderConfig:
    """Options of ``bgprompt render``; stored in the manifest so a data set can be regenerated.

    Args:
        kind (str, default "objects"): "objects" (one object per image, ABO-like), "scenes" (indoor rooms) or
            "tabletop" (objects on a table seen by a simulated RGB-D sensor).
        size (int, default 256): image side in pixels.
        seed (int, default 0): every sample is a pure function of (seed, index).
        families (tuple[str], default all): procedural shape families.
        meshes (str | None): a folder of real meshes, used instead of procedural shapes (objects).
        mesh_up (str, default "y"): the meshes' up axis ("y" or "z").
        textures (str | None): a folder of material images.
        background (tuple[float, float, float], default white): the objects' background colour in [0, 1].
        elevation (tuple[float, float], default (0, 75)): camera elevation range, degrees above the horizon.
        roll_jitter (float, default 0): std of the camera roll, degrees.
        offcenter (float, default 0): largest shift of the object centre, a fraction of half the image.
        crop (float, default 0): probability of a zoomed-in view cutting the object.
        fill (tuple[float, float], default (0.7, 0.95)): bounding-sphere size, a fraction of the half field of view.
        closeup (float, default 0): scenes: probability of a close view (0.1-1 m) of the target object.
        sensor (str, default "d435-like"): tabletop: the simulated RGB-D sensor preset, or "none" (perfect).
        materials (tuple[float, ...], default equal): tabletop: weights of diffuse, specular, transparent, dark.
    """

    kind: str = "objects"
    size: int = 256
    seed: int = 0
    families: tuple[str, ...] = FAMILIES
    meshes: str | None = None
    mesh_up: str = "y"
    textures: str | None = None
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    elevation: tuple[float, float] = (0.0, 75.0)
    roll_jitter: float = 0.0
    offcenter: float = 0.0
    crop: float = 0.0
    fill: tuple[float, float] = (0.7, 0.95)
    closeup: float = 0.0
    sensor: str = "d435-like"
    materials: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, got {self.kind!r}")
        from bgprompt_core.evaluation.sensor_model import MATERIALS, SENSORS

        if self.sensor not in SENSORS:
            raise ConfigError(f"sensor must be one of {SENSORS}, got {self.sensor!r}")
        if len(self.materials) != len(MATERIALS) or min(self.materials) < 0 or sum(self.materials) <= 0:
            raise ConfigError(f"materials: {len(MATERIALS)} non-negative weights for {MATERIALS}, not all zero")
        if self.size < 8:
            raise ConfigError(f"size must be >= 8 pixels, got {self.size}")
        bad = set(self.families) - set(FAMILIES)
        if bad or not self.families:
            raise ConfigError(f"unknown shape families {sorted(bad)}; choose from {FAMILIES}")
        if not (0 <= self.elevation[0] <= self.elevation[1] <= 90):
            raise ConfigError(f"elevation must satisfy 0 <= min <= max <= 90, got {self.elevation}")
        if not (0 <= self.offcenter < 1 and 0 <= self.crop <= 1 and 0 <= self.closeup <= 1):
            raise ConfigError("offcenter must lie in [0, 1), crop and closeup in [0, 1]")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _light(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    d = np.array([rng.uniform(-1, 1), rng.uniform(-0.2, 1.2), rng.uniform(0.4, 1.2)])
    return d / np.linalg.norm(d), float(rng.uniform(0.25, 0.5))


class Generator:
    """Builds samples for a config; one instance per process (holds the mesh cache and the backend)."""

    def __init__(self, cfg: RenderConfig, backend: str = "auto"):
        self.cfg = cfg
        self.materials = MaterialImages(cfg.textures) if cfg.textures else None
        self.mesh_files: list[Path] = []
        if cfg.meshes:
            from .meshes import load_mesh_folder

            self.mesh_files = load_mesh_folder(cfg.meshes)
        self.backend, self._gl = resolve_backend(backend)
        self.skipped_meshes: list[str] = []

    def render(self, instances: list[Instance], view: View) -> Frame:
        return self._gl.render(instances, view) if self._gl is not None else render_numpy(instances, view)

    def _texture(self, rng: np.random.Generator, mesh: Mesh | None = None) -> np.ndarray:
        if mesh is not None and mesh.texture is not None:
            return mesh.texture
        if self.materials is not None and rng.random() < 0.5:
            return self.materials.pick(rng)
        return procedural_texture(rng)

    def _object_mesh(self, rng: np.random.Generator) -> Mesh:
        if not self.mesh_files:
            return random_shape(rng, tuple(self.cfg.families))
        order = rng.permutation(len(self.mesh_files))
        for i in order:  # bad files are skipped with a warning, the next one is tried
            try:
                return _cached_mesh(str(self.mesh_files[i]), self.cfg.mesh_up)
            except Exception as exc:  # trimesh raises many types for broken files
                name = self.mesh_files[i].name
                if name not in self.skipped_meshes:
                    self.skipped_meshes.append(name)
                    import logging

                    logging.getLogger(__name__).warning("skipping unreadable mesh %s: %s", name, exc)
        raise ConfigError(f"no readable mesh under {self.cfg.meshes}")

    def sample(self, index: int) -> dict:
        if self.cfg.kind == "tabletop":
            from .tabletop import tabletop_sample

            return tabletop_sample(self, index)
        return self.object_sample(index) if self.cfg.kind == "objects" else self.scene_sample(index)

    def object_sample(self, index: int) -> dict:
        cfg = self.cfg
        rng = sample_rng(cfg.seed, index)
        mesh = self._object_mesh(rng)
        texture = self._texture(rng, mesh)
        radius = rng.uniform(0.08, 0.3)
        R = random_rotation(rng, upright=rng.random() < 0.6)
        obj = Instance(mesh, pose(R, radius, np.zeros(3)), texture, 1)
        f = ABO_FOCAL_512 * cfg.size / 512
        half_fov = np.arctan((cfg.size / 2) / f)
        fill = rng.uniform(*cfg.fill)
        if cfg.crop > 0 and rng.random() < cfg.crop:
            fill = rng.uniform(1.2, 2.0)  # closer than fully visible: part of the object is cut
        dist = radius / np.sin(min(half_fov * fill, 1.5))
        elev = np.deg2rad(rng.uniform(*cfg.elevation))
        azim = rng.uniform(0, 2 * np.pi)
        eye = dist * np.array([np.cos(elev) * np.cos(azim), np.sin(elev), np.cos(elev) * np.sin(azim)])
        roll = np.deg2rad(rng.normal(0, cfg.roll_jitter)) if cfg.roll_jitter > 0 else 0.0
        cam = look_at(eye, np.zeros(3), roll=roll)
        if cfg.offcenter > 0:  # turn the camera so the object centre lands off the image centre
            shift = rng.uniform(-1, 1, 2) * cfg.offcenter * np.tan(half_fov) * (1 - fill * 0.5)
            yaw, pitch = np.arctan(shift[0]), np.arctan(shift[1])
            cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
            turn = np.eye(4)
            turn[:3, :3] = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]]) @ np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
            cam = turn @ cam
        light, ambient = _light(rng)
        view = View(intrinsics((cfg.size, cfg.size), f), cam, cfg.size, cfg.size, light, ambient, 1 - ambient,
                    background=cfg.background)
        frame = self.render([obj], view)
        mask = frame.instance == 1
        return pack_sample(frame, mask, view, mesh.name if self.mesh_files else f"{mesh.meta['family']}-{index}",
                     mesh.meta.get("family", "mesh"))

    def scene_sample(self, index: int) -> dict:
        rng = sample_rng(self.cfg.seed, index)
        room = build_room(rng, self)
        size = self.cfg.size
        # aim at one of the placed objects from 0.8-3 m away, 0.8-2.3 m high, 20-60 degrees down
        target, target_r = room.anchors[int(rng.integers(len(room.anchors)))]
        margin = 0.35
        for _ in range(20):
            yaw = rng.uniform(0, 2 * np.pi)
            pitch = np.deg2rad(rng.uniform(20, 60))
            height = rng.uniform(0.8, min(2.3, room.height - 0.2))
            horiz = max(height - target[1], 0.1) / np.tan(pitch)
            eye = target + np.array([-np.cos(yaw) * horiz, 0, -np.sin(yaw) * horiz])
            eye[1] = height
            dist = np.hypot(horiz, height - target[1])
            inside = margin < eye[0] < room.width - margin and margin < eye[2] < room.depth - margin
            if inside and 2.5 * target_r + 0.3 < dist < 3.0:
                break
        else:
            eye = np.array([room.width / 2, min(1.6, room.height - 0.3), room.depth / 2])
            to_t = target - eye
            yaw, pitch = np.arctan2(to_t[2], to_t[0]), np.deg2rad(40)
        if self.cfg.closeup and rng.random() < self.cfg.closeup:
            # slide the eye toward the target along the same ray: the object fills much of the view, as in the
            # object-centric shots of real depth training sets, while the room stays behind it
            close = rng.uniform(1.6 * target_r + 0.1, 2.5 * target_r + 0.3)
            eye = target + (eye - target) * (close / max(np.linalg.norm(eye - target), 1e-6))
        yaw += rng.normal(0, 0.15)
        fwd = np.array([np.cos(pitch) * np.cos(yaw), -np.sin(pitch), np.cos(pitch) * np.sin(yaw)])
        cam = look_at(eye, eye + fwd, roll=np.deg2rad(rng.normal(0, 2)))
        f = (size / 2) / np.tan(np.deg2rad(rng.uniform(50, 70)) / 2)
        light, ambient = _light(rng)
        view = View(intrinsics((size, size), f), cam, size, size, light, ambient, 1 - ambient, background=(0, 0, 0))
        frame = self.render(room.instances, view)
        mask = np.isin(frame.instance, room.objects)
        return pack_sample(frame, mask, view, f"scene-{index}", "scene")


@dataclass
class Room:
    instances: list[Instance]
    objects: list[int]  # instance ids of the placed objects (the scene's foreground)
    anchors: list[tuple[np.ndarray, float]]  # (world position, radius) of the placed objects: camera targets
    width: float
    depth: float
    height: float


def build_room(rng: np.random.Generator, gen: Generator) -> Room:
    """A closed room (floor, ceiling, 4 walls), 0-2 tables, 2-7 objects and 2-8 pieces of clutter."""
    W, D, H = rng.uniform(3, 6), rng.uniform(3, 6), rng.uniform(2.4, 3.0)
    grid = plane_grid()
    surfaces = [
        (np.eye(3), W, D, [W / 2, 0, D / 2]),  # floor
        (rot_x(np.pi), W, D, [W / 2, H, D / 2]),  # ceiling
        (rot_x(np.pi / 2), W, H, [W / 2, H / 2, 0]),  # wall z = 0, normal +z
        (rot_x(-np.pi / 2), W, H, [W / 2, H / 2, D]),
        (rot_z(-np.pi / 2), H, D, [0, H / 2, D / 2]),  # wall x = 0, normal +x
        (rot_z(np.pi / 2), H, D, [W, H / 2, D / 2]),
    ]
    instances: list[Instance] = []
    next_id = 1
    for R, sx, sz, t in surfaces:
        instances.append(Instance(grid, surface(R, sx, sz, np.array(t)), procedural_texture(rng), next_id))
        next_id += 1
    supports = [(0.0, (0.3, W - 0.3, 0.3, D - 0.3))]  # (height, x/z extent) where things can stand
    for _ in range(rng.integers(0, 3)):
        tw, td, th = rng.uniform(0.6, 1.6), rng.uniform(0.5, 1.0), rng.uniform(0.65, 0.8)
        cx, cz = rng.uniform(tw / 2 + 0.2, W - tw / 2 - 0.2), rng.uniform(td / 2 + 0.2, D - td / 2 - 0.2)
        tex = gen._texture(rng)
        top = box(tw, 0.04, td)
        instances.append(Instance(top, pose(np.eye(3), 1.0, np.array([cx, th - 0.02, cz])), tex, next_id))
        next_id += 1
        leg = box(0.05, th - 0.04, 0.05)
        for sx_, sz_ in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
            p = np.array([cx + sx_ * (tw / 2 - 0.05), (th - 0.04) / 2, cz + sz_ * (td / 2 - 0.05)])
            instances.append(Instance(leg, pose(np.eye(3), 1.0, p), tex, next_id))
            next_id += 1
        supports.append((th, (cx - tw / 2 + 0.1, cx + tw / 2 - 0.1, cz - td / 2 + 0.1, cz + td / 2 - 0.1)))
    objects, anchors, placed = [], [], []
    n_obj, n_clutter = int(rng.integers(2, 8)), int(rng.integers(2, 9))
    for k in range(n_obj + n_clutter):
        clutter = k >= n_obj
        mesh = random_shape(rng, ("primitive",) if clutter else tuple(gen.cfg.families))
        radius = rng.uniform(0.03, 0.08) if clutter else rng.uniform(0.08, 0.3)
        h, (x0, x1, z0, z1) = supports[rng.integers(len(supports))]
        R = random_rotation(rng, upright=rng.random() < 0.7)
        low = (mesh.vertices @ R.T).min(0)[1] * radius
        for _ in range(10):  # avoid interpenetration with what stands there already
            p = np.array([rng.uniform(x0, x1), h - low, rng.uniform(z0, z1)])
            if all(np.linalg.norm((p - q)[[0, 2]]) > radius + rq for q, rq in placed):
                break
        placed.append((p, radius))
        instances.append(Instance(mesh, pose(R, radius, p), gen._texture(rng, mesh), next_id))
        if not clutter:
            objects.append(next_id)
            anchors.append((p, radius))
        next_id += 1
    return Room(instances, objects, anchors, W, D, H)


@lru_cache(maxsize=64)
def _cached_mesh(path: str, up: str) -> Mesh:
    return load_mesh_file(path, up)


def resolve_backend(name: str):
    """('gl', renderer) or ('numpy', None). 'auto' falls back to numpy when EGL cannot start."""
    if name not in ("auto", "gl", "numpy"):
        raise ConfigError(f"backend must be auto, gl or numpy, got {name!r}")
    if name == "numpy":
        return "numpy", None
    try:
        from .raster_gl import GLRenderer

        return "gl", GLRenderer()
    except Exception as exc:  # no moderngl, no EGL, no display libraries...
        if name == "gl":
            raise Unavailable(f"OpenGL backend unavailable ({exc}); use --backend numpy") from exc
        return "numpy", None
