"""Triangle meshes for rendering: procedural shape families and loading real meshes from files.

All meshes are centred at the origin and scaled to a unit bounding sphere; callers place and scale
them. Vertex normals point outward; flat faces get their own vertices so their normals stay flat.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bgprompt_core.method.config import ConfigError

log = logging.getLogger(__name__)

FAMILIES = ("primitive", "superquadric", "smooth_union", "extrusion", "lathe")


@dataclass
class Mesh:
    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32, counter-clockwise seen from outside
    normals: np.ndarray  # (V, 3) float32, unit, outward
    uv: np.ndarray  # (V, 2) float32 in [0, 1]
    texture: np.ndarray | None = None  # (h, w, 3) uint8; None: the caller assigns one
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, np.float32)
        self.faces = np.ascontiguousarray(self.faces, np.int32)
        self.normals = np.ascontiguousarray(self.normals, np.float32)
        self.uv = np.ascontiguousarray(self.uv, np.float32)
        if len(self.faces) == 0 or len(self.vertices) == 0:
            raise ConfigError(f"mesh {self.name!r} is empty")
        if self.faces.max() >= len(self.vertices) or self.faces.min() < 0:
            raise ConfigError(f"mesh {self.name!r} has face indices out of range")
        if not (np.isfinite(self.vertices).all() and np.isfinite(self.normals).all()):
            raise ConfigError(f"mesh {self.name!r} has NaN/inf vertices or normals")

    def normalized(self) -> "Mesh":
        """Centred on its bounding-box centre and scaled to a unit bounding sphere."""
        lo, hi = self.vertices.min(0), self.vertices.max(0)
        v = self.vertices - (lo + hi) / 2
        r = float(np.linalg.norm(v, axis=1).max())
        if r <= 0:
            raise ConfigError(f"mesh {self.name!r} is degenerate (zero extent)")
        return Mesh(v / r, self.faces, self.normals, self.uv, self.texture, self.name, dict(self.meta))


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 1e-12, n, 1.0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted average of face normals at each vertex."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return _unit(vn)


def _grid_faces(rows: int, cols: int, wrap: bool) -> np.ndarray:
    """Quads of a (rows x cols) vertex grid as triangles; ``wrap`` joins the last column to the first."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols if wrap else cols - 1), indexing="ij")
    c2 = (c + 1) % cols
    a, b, d, e = r * cols + c, r * cols + c2, (r + 1) * cols + c, (r + 1) * cols + c2
    return np.concatenate([np.stack([a, d, b], -1).reshape(-1, 3), np.stack([b, d, e], -1).reshape(-1, 3)])


def _spow(x: np.ndarray, e: float) -> np.ndarray:
    return np.sign(x) * np.abs(x) ** e


def superquadric(a: float, b: float, c: float, e1: float, e2: float, n: int = 48) -> Mesh:
    """Barr's superquadric; e1 = e2 = 1 is an ellipsoid, small exponents give boxes, large ones stars."""
    eta = np.linspace(-np.pi / 2, np.pi / 2, n)
    om = np.linspace(-np.pi, np.pi, 2 * n, endpoint=False)
    E, O = np.meshgrid(eta, om, indexing="ij")
    x = a * _spow(np.cos(E), e1) * _spow(np.cos(O), e2)
    y = b * _spow(np.cos(E), e1) * _spow(np.sin(O), e2)
    z = c * _spow(np.sin(E), e1)
    v = np.stack([x, z, y], -1).reshape(-1, 3)  # y-up
    # analytic normal of the implicit surface (|x/a|^(2/e2) + |y/b|^(2/e2))^(e2/e1) + |z/c|^(2/e1) = 1
    nx = _spow(np.cos(E), 2 - e1) * _spow(np.cos(O), 2 - e2) / a
    ny = _spow(np.cos(E), 2 - e1) * _spow(np.sin(O), 2 - e2) / b
    nz = _spow(np.sin(E), 2 - e1) / c
    nrm = np.stack([nx, nz, ny], -1).reshape(-1, 3)
    faces = _grid_faces(n, 2 * n, wrap=True)
    uv = np.stack([(O + np.pi) / (2 * np.pi), (E + np.pi / 2) / np.pi], -1).reshape(-1, 2)
    nrm = np.where(np.linalg.norm(nrm, axis=1, keepdims=True) > 1e-9, nrm, vertex_normals(v, faces))
    return Mesh(v, faces, _unit(nrm), uv, name=f"superquadric({e1:.2f},{e2:.2f})")


def lathe(radius: np.ndarray, height: np.ndarray, segments: int = 48) -> Mesh:
    """Surface of revolution of a profile (radius(t), height(t)) about the y axis, with flat caps."""
    radius, height = np.asarray(radius, float), np.asarray(height, float)
    th = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    R, T = np.meshgrid(radius, th, indexing="ij")
    Y = np.repeat(height[:, None], segments, 1)
    side = np.stack([R * np.cos(T), Y, R * np.sin(T)], -1).reshape(-1, 3)
    faces = _grid_faces(len(radius), segments, wrap=True)[:, ::-1]  # outward winding
    uv = np.stack([np.repeat(np.linspace(0, 1, len(radius))[:, None], segments, 1),
                   np.tile(th / (2 * np.pi), (len(radius), 1))], -1).reshape(-1, 2)
    # profile normal: perpendicular to the profile tangent, rotated about y
    dr, dy = np.gradient(radius), np.gradient(height)
    prof_n = _unit(np.stack([dy, -dr], -1))
    nrm = np.stack([prof_n[:, 0][:, None] * np.cos(T), np.repeat(prof_n[:, 1][:, None], segments, 1),
                    prof_n[:, 0][:, None] * np.sin(T)], -1).reshape(-1, 3)
    parts = [(side, faces, nrm, uv)]
    for idx, sign in ((0, -1.0), (len(radius) - 1, 1.0)):
        if radius[idx] > 1e-6:
            ring = np.stack([radius[idx] * np.cos(th), np.full_like(th, height[idx]), radius[idx] * np.sin(th)], -1)
            verts = np.concatenate([[[0, height[idx], 0]], ring])
            k = np.arange(segments)
            f = np.stack([np.zeros(segments, int), 1 + k, 1 + (k + 1) % segments], -1)
            f = f if sign < 0 else f[:, ::-1]
            n_cap = np.tile([0, sign, 0], (segments + 1, 1))
            uvc = 0.5 + 0.5 * np.concatenate([[[0, 0]], np.stack([np.cos(th), np.sin(th)], -1)])
            parts.append((verts, f, n_cap, uvc))
    return _merge(parts, "lathe")


def _merge(parts, name: str) -> Mesh:
    vs, fs, ns, uvs, off = [], [], [], [], 0
    for v, f, n, uv in parts:
        vs.append(v)
        fs.append(np.asarray(f) + off)
        ns.append(n)
        uvs.append(uv)
        off += len(v)
    return Mesh(np.concatenate(vs), np.concatenate(fs), _unit(np.concatenate(ns)), np.concatenate(uvs), name=name)


def box(sx: float, sy: float, sz: float) -> Mesh:
    """Axis-aligned box with flat faces (4 own vertices per face)."""
    parts = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            u_ax, v_ax = [a for a in range(3) if a != axis]
            corners = []
            for cu, cv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = np.zeros(3)
                p[axis], p[u_ax], p[v_ax] = sign, cu, cv
                corners.append(p * np.array([sx, sy, sz]) / 2)
            corners = np.array(corners)
            f = np.array([[0, 1, 2], [0, 2, 3]])
            n = np.zeros(3)
            n[axis] = sign
            if np.dot(np.cross(corners[1] - corners[0], corners[2] - corners[0]), n) < 0:
                f = f[:, ::-1]
            parts.append((corners, f, np.tile(n, (4, 1)), np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)))
    return _merge(parts, "box")


def extrusion(polygon: np.ndarray, height: float) -> Mesh:
    """A prism: a star-shaped 2D polygon (P, 2) around the origin extruded along y, with flat caps."""
    p = np.asarray(polygon, float)
    if np.cross(np.roll(p, -1, 0) - p, p)[:, None].sum() > 0:  # make it counter-clockwise in (x, z)
        p = p[::-1]
    n = len(p)
    parts = []
    for i in range(n):
        a, b = p[i], p[(i + 1) % n]
        quad = np.array([[a[0], -height / 2, a[1]], [b[0], -height / 2, b[1]],
                         [b[0], height / 2, b[1]], [a[0], height / 2, a[1]]])
        f = np.array([[0, 1, 2], [0, 2, 3]])
        normal = _unit(np.cross(quad[1] - quad[0], quad[3] - quad[0]))
        if np.dot(normal, quad.mean(0) * np.array([1, 0, 1])) < 0:
            f, normal = f[:, ::-1], -normal
        length = np.linalg.norm(b - a)
        parts.append((quad, f, np.tile(normal, (4, 1)), np.array([[0, 0], [length, 0], [length, 1], [0, 1]])))
    for sign in (-1.0, 1.0):
        verts = np.concatenate([[[0, sign * height / 2, 0]], np.stack([p[:, 0], np.full(n, sign * height / 2), p[:, 1]], -1)])
        k = np.arange(n)
        f = np.stack([np.zeros(n, int), 1 + k, 1 + (k + 1) % n], -1)
        tri = verts[f[0]]
        if np.dot(np.cross(tri[1] - tri[0], tri[2] - tri[0]), [0, sign, 0]) < 0:
            f = f[:, ::-1]
        uvc = 0.5 + 0.5 * np.concatenate([[[0, 0]], p / np.abs(p).max()])
        parts.append((verts, f, np.tile([0, sign, 0], (n + 1, 1)), uvc))
    return _merge(parts, "extrusion")


def smooth_union(centers: np.ndarray, radii: np.ndarray, k: float = 0.15, res: int = 40) -> Mesh:
    """Blob: smooth minimum (polynomial, Quilez) of sphere SDFs, meshed by marching cubes (PyMCubes)."""
    import mcubes  # PyMCubes: a small compiled marching-cubes; writing one here would be slower and longer

    lo = (centers - radii[:, None]).min(0) - 0.1
    hi = (centers + radii[:, None]).max(0) + 0.1
    axes = [np.linspace(lo[i], hi[i], res) for i in range(3)]
    X = np.stack(np.meshgrid(*axes, indexing="ij"), -1)

    def sdf(pts: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(pts[..., None, :] - centers, axis=-1) - radii
        out = d[..., 0]
        for j in range(1, d.shape[-1]):
            h = np.clip(0.5 + 0.5 * (d[..., j] - out) / k, 0, 1)
            out = d[..., j] * (1 - h) + out * h - k * h * (1 - h)
        return out

    verts, faces = mcubes.marching_cubes(-sdf(X), 0.0)
    verts = lo + verts * (hi - lo) / (res - 1)
    eps = 1e-3
    grad = np.stack([sdf(verts + eps * e) - sdf(verts - eps * e) for e in np.eye(3)], -1)
    nrm = _unit(grad)
    faces = faces.astype(np.int64)
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if np.mean(np.sum(fn * nrm[faces].mean(1), -1)) < 0:
        faces = faces[:, ::-1]
    d = _unit(verts - verts.mean(0))
    uv = np.stack([0.5 + np.arctan2(d[:, 2], d[:, 0]) / (2 * np.pi), 0.5 + np.arcsin(np.clip(d[:, 1], -1, 1)) / np.pi], -1)
    return Mesh(verts, faces, nrm, uv, name="smooth_union")


def random_shape(rng: np.random.Generator, families: tuple[str, ...] = FAMILIES) -> Mesh:
    """One procedural shape of a random family from ``families``, normalized."""
    family = families[rng.integers(len(families))]
    if family == "primitive":
        kind = rng.integers(4)
        if kind == 0:
            m = box(*rng.uniform(0.3, 1.0, 3))
        elif kind == 1:
            m = superquadric(*rng.uniform(0.4, 1.0, 3), 1.0, 1.0)
        elif kind == 2:  # cylinder
            r = rng.uniform(0.2, 0.6)
            m = lathe(np.array([r, r]), np.array([-0.5, 0.5]) * rng.uniform(0.5, 1.5))
        else:  # cone
            m = lathe(np.array([rng.uniform(0.3, 0.6), 0.0]), np.array([-0.5, 0.5]) * rng.uniform(0.6, 1.4))
    elif family == "superquadric":
        m = superquadric(*rng.uniform(0.4, 1.0, 3), rng.uniform(0.2, 2.0), rng.uniform(0.2, 2.0))
    elif family == "smooth_union":
        n = rng.integers(2, 5)
        m = smooth_union(rng.uniform(-0.4, 0.4, (n, 3)), rng.uniform(0.2, 0.45, n), k=rng.uniform(0.05, 0.25))
    elif family == "extrusion":
        n = rng.integers(3, 9)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n)) if rng.random() < 0.5 else np.linspace(0, 2 * np.pi, n, endpoint=False)
        rad = rng.uniform(0.4, 1.0, n) if rng.random() < 0.6 else np.tile([1.0, rng.uniform(0.4, 0.7)], n)[:n]
        ang = np.linspace(0, 2 * np.pi, len(rad), endpoint=False) if len(rad) != len(ang) else ang
        m = extrusion(np.stack([rad * np.cos(ang), rad * np.sin(ang)], -1), rng.uniform(0.3, 1.2))
    elif family == "lathe":
        k = rng.integers(4, 9)
        h = np.linspace(-0.5, 0.5, k) * rng.uniform(0.8, 1.6)
        r = np.abs(np.convolve(rng.uniform(0.15, 0.6, k + 2), np.ones(3) / 3, mode="valid"))
        t = np.linspace(0, 1, 24)
        m = lathe(np.interp(t, np.linspace(0, 1, k), r), np.interp(t, np.linspace(0, 1, k), h))
    else:
        raise ConfigError(f"unknown shape family {family!r}; expected one of {FAMILIES}")
    m.meta["family"] = family
    return m.normalized()


UP_AXES = ("y", "z")


def load_mesh_file(path: str | Path, up: str = "y") -> Mesh:
    """Load OBJ/GLB/GLTF/PLY with trimesh: one mesh, textured when a material image exists.

    Units do not matter (meshes are normalized to a unit bounding sphere). ``up``: the file's up axis,
    "y" (glTF, most OBJ) or "z" (e.g. pybullet and robosuite assets). Missing materials give an
    untextured mesh (the caller assigns a procedural texture).
    """
    import trimesh

    path = Path(path)
    loaded = trimesh.load(str(path), force="mesh", process=True)
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ConfigError(f"{path}: no triangles")
    v = np.asarray(loaded.vertices, float)
    if up not in UP_AXES:
        raise ConfigError(f"up must be one of {UP_AXES}, got {up!r}")
    if up == "z":
        v = v[:, [0, 2, 1]] * np.array([1, 1, -1])  # z-up -> y-up (a rotation: keeps handedness)
    faces = np.asarray(loaded.faces)
    uv = np.zeros((len(v), 2))
    texture = None
    visual = getattr(loaded, "visual", None)
    if visual is not None and getattr(visual, "uv", None) is not None and len(visual.uv) == len(v):
        uv = np.asarray(visual.uv, float) % 1.0
        uv[:, 1] = 1 - uv[:, 1]
        image = getattr(getattr(visual, "material", None), "baseColorTexture", None) or \
            getattr(getattr(visual, "material", None), "image", None)
        if image is not None:
            texture = np.asarray(image.convert("RGB"))
    mesh = Mesh(v, faces, vertex_normals(v, faces), uv, texture, name=path.stem, meta={"family": "mesh", "file": path.name})
    return mesh.normalized()


def load_mesh_folder(folder: str | Path) -> list[Path]:
    """Mesh files under ``folder`` (recursive), sorted for reproducibility."""
    exts = {".obj", ".glb", ".gltf", ".ply", ".stl", ".off"}
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in exts)
    if not files:
        raise FileNotFoundError(f"no mesh files ({', '.join(sorted(exts))}) under {folder}")
    return files


def plane_grid(n: int = 8) -> Mesh:
    """A unit square in x-z (y = 0, normal +y) split into n x n cells (keeps near-plane clipping local)."""
    t = np.linspace(-0.5, 0.5, n + 1)
    X, Z = np.meshgrid(t, t, indexing="ij")
    v = np.stack([X, np.zeros_like(X), Z], -1).reshape(-1, 3)
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a, b, d, e = r * (n + 1) + c, r * (n + 1) + c + 1, (r + 1) * (n + 1) + c, (r + 1) * (n + 1) + c + 1
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([b, e, d], -1).reshape(-1, 3)])
    uv = (v[:, [0, 2]] + 0.5) * 4
    return Mesh(v, faces, np.tile([0.0, 1.0, 0.0], (len(v), 1)), uv, name="plane")
