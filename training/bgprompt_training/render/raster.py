"""Shared scene description and the pure-numpy backend.

The numpy backend casts the ray of every pixel centre inside each triangle's screen bounding box,
fully vectorized (no per-pixel Python): depth is the exact ray/plane intersection, computed as the
perspective-correct barycentric interpolation, which is what OpenGL's interpolation of camera-space
positions computes too. Both backends take the same camera-frame triangles and shade them the same
way (Lambert + ambient, nearest-texel textures), so they agree on geometry to float precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import View
from .meshes import Mesh


@dataclass
class Instance:
    mesh: Mesh
    world_from_object: np.ndarray  # 4x4, rotation * uniform scale + translation
    texture: np.ndarray  # (h, w, 3) uint8
    instance_id: int  # >= 1; 0 is "no surface"


@dataclass
class Frame:
    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    depth: np.ndarray  # (H, W) float32 z-depth in metres, 0 where no surface
    normals: np.ndarray  # (H, W, 3) float32 unit, camera frame, facing the camera; 0 where no surface
    instance: np.ndarray  # (H, W) int32, 0 where no surface


def camera_triangles(instances: list[Instance], view: View):
    """Per-triangle camera-frame attributes (F, 3, 8) = position, normal, uv; and instance index (F,)."""
    attrs, owner = [], []
    for k, inst in enumerate(instances):
        M = view.cam_from_world @ inst.world_from_object
        R = M[:3, :3]
        v = inst.mesh.vertices @ R.T + M[:3, 3]
        n = inst.mesh.normals @ np.linalg.inv(R)  # inverse-transpose, rows
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        a = np.concatenate([v, n, inst.mesh.uv], 1)[inst.mesh.faces]
        attrs.append(a)
        owner.append(np.full(len(a), k, np.int32))
    return np.concatenate(attrs).astype(np.float64), np.concatenate(owner)


def clip_near(attrs: np.ndarray, owner: np.ndarray, near: float):
    """Sutherland-Hodgman clipping of triangles against z = near (vectorized, winding kept)."""
    behind = attrs[:, :, 2] < near
    count = behind.sum(1)
    keep = [attrs[count == 0]]
    keep_owner = [owner[count == 0]]

    def lerp(a, b):
        t = ((near - a[:, 2]) / (b[:, 2] - a[:, 2]))[:, None]
        return a + t * (b - a)

    for n_behind in (1, 2):
        sel = count == n_behind
        if not sel.any():
            continue
        tri, own = attrs[sel], owner[sel]
        flag = behind[sel] if n_behind == 1 else ~behind[sel]
        first = np.argmax(flag, axis=1)  # the odd vertex goes first; rolling keeps the winding
        idx = (first[:, None] + np.arange(3)[None]) % 3
        tri = np.take_along_axis(tri, idx[:, :, None], axis=1)
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        if n_behind == 1:  # a behind: quad (ab, b, c, ac)
            ab, ac = lerp(a, b), lerp(a, c)
            keep += [np.stack([ab, b, c], 1), np.stack([ab, c, ac], 1)]
            keep_owner += [own, own]
        else:  # only a in front
            keep.append(np.stack([a, lerp(a, b), lerp(a, c)], 1))
            keep_owner.append(own)
    return np.concatenate(keep), np.concatenate(keep_owner)


def shade(base: np.ndarray, normals: np.ndarray, view: View) -> np.ndarray:
    """Lambert + ambient: ``base * (ambient + diffuse * max(0, n . -L))``."""
    lam = np.clip(normals @ (-view.light_dir), 0, None)
    return base * (view.ambient + view.diffuse * lam)[..., None]


def render_numpy(instances: list[Instance], view: View, chunk: int = 4_000_000) -> Frame:
    """Rasterize ``instances`` with a z-buffer in numpy: depth, normals, shaded colour and instance ids."""
    h, w = view.height, view.width
    attrs, owner = camera_triangles(instances, view)
    attrs, owner = clip_near(attrs, owner, view.near)
    z = attrs[:, :, 2]
    u, v, u0, v0, bw, area, counts = _screen_boxes(attrs, view.K, h, w)
    zbuf = np.full(h * w, np.inf)
    win_tri = np.full(h * w, -1, np.int64)
    win_bary = np.zeros((h * w, 3))
    order = np.nonzero(counts)[0]
    start = 0
    while start < len(order):
        csum = np.cumsum(counts[order[start:]])
        stop = start + max(1, int(np.searchsorted(csum, chunk, side="right")))
        tris = order[start:stop]
        start = stop
        pix, zc, t, bc = _nearest_fragments(tris, counts, u, v, u0, v0, bw, area, z, w)
        better = zc < zbuf[pix]
        pix, zc, t, bc = pix[better], zc[better], t[better], bc[better]
        zbuf[pix], win_tri[pix], win_bary[pix] = zc, t, bc
    return _resolve(instances, view, attrs, owner, zbuf, win_tri, win_bary)


def _screen_boxes(attrs: np.ndarray, K: np.ndarray, h: int, w: int):
    """Each triangle's pixel coordinates, its pixel bounding box (first column / row and width), its signed
    screen area and its count of candidate pixels (0 for degenerate triangles)."""
    z = attrs[:, :, 2]
    u = K[0, 0] * attrs[:, :, 0] / z + K[0, 1] * attrs[:, :, 1] / z + K[0, 2]
    v = K[1, 1] * attrs[:, :, 1] / z + K[1, 2]
    u0 = np.clip(np.ceil(u.min(1)), 0, w).astype(np.int64)
    u1 = np.clip(np.floor(u.max(1)), -1, w - 1).astype(np.int64)
    v0 = np.clip(np.ceil(v.min(1)), 0, h).astype(np.int64)
    v1 = np.clip(np.floor(v.max(1)), -1, h - 1).astype(np.int64)
    bw, bh = np.maximum(u1 - u0 + 1, 0), np.maximum(v1 - v0 + 1, 0)
    area = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (u[:, 2] - u[:, 0]) * (v[:, 1] - v[:, 0])
    counts = np.where(np.abs(area) > 1e-12, bw * bh, 0)
    return u, v, u0, v0, bw, area, counts


def _nearest_fragments(tris, counts, u, v, u0, v0, bw, area, z, w: int):
    """The fragments of triangles ``tris`` inside them, the nearest per pixel: pixel index, depth, triangle and
    perspective-correct barycentrics."""
    n = counts[tris]
    t = np.repeat(tris, n)
    local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    pu = u0[t] + local % bw[t]
    pv = v0[t] + local // bw[t]
    tu, tv = u[t], v[t]
    # edge functions at pixel centres -> screen-space barycentrics
    b0 = (tu[:, 1] - pu) * (tv[:, 2] - pv) - (tu[:, 2] - pu) * (tv[:, 1] - pv)
    b1 = (tu[:, 2] - pu) * (tv[:, 0] - pv) - (tu[:, 0] - pu) * (tv[:, 2] - pv)
    b2 = (tu[:, 0] - pu) * (tv[:, 1] - pv) - (tu[:, 1] - pu) * (tv[:, 0] - pv)
    b = np.stack([b0, b1, b2], 1) / area[t][:, None]
    inside = (b >= 0).all(1)
    t, pu, pv, b = t[inside], pu[inside], pv[inside], b[inside]
    inv_z = (b / z[t]).sum(1)  # perspective-correct: 1/z is affine in screen space
    zc = 1.0 / inv_z
    bc = (b / z[t]) * zc[:, None]
    pix = pv * w + pu
    srt = np.lexsort((zc, pix))
    pix, zc, t, bc = pix[srt], zc[srt], t[srt], bc[srt]
    first = np.ones(len(pix), bool)
    first[1:] = pix[1:] != pix[:-1]
    return pix[first], zc[first], t[first], bc[first]


def _resolve(instances: list[Instance], view: View, attrs: np.ndarray, owner: np.ndarray, zbuf: np.ndarray,
             win_tri: np.ndarray, win_bary: np.ndarray) -> Frame:
    """The frame of the winning fragments: depth, camera-facing normals, textured and shaded colour, ids."""
    h, w = view.height, view.width
    hit = win_tri >= 0
    depth = np.where(hit, zbuf, 0.0).reshape(h, w).astype(np.float32)
    normals = np.zeros((h * w, 3))
    rgb = np.tile(np.asarray(view.background, float), (h * w, 1))
    instance = np.zeros(h * w, np.int32)
    idx = np.nonzero(hit)[0]
    if len(idx):
        tri = attrs[win_tri[idx]]
        bc = win_bary[idx][:, :, None]
        pos = (tri[:, :, 0:3] * bc).sum(1)
        nrm = (tri[:, :, 3:6] * bc).sum(1)
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-12
        nrm = np.where(((nrm * pos).sum(1) > 0)[:, None], -nrm, nrm)  # face the camera
        uv = (tri[:, :, 6:8] * bc).sum(1)
        own = owner[win_tri[idx]]
        base = np.zeros((len(idx), 3))
        for k, inst in enumerate(instances):
            sel = own == k
            if sel.any():
                tex = inst.texture
                th, tw = tex.shape[:2]
                cu = np.clip(np.floor((uv[sel, 0] % 1.0) * tw), 0, tw - 1).astype(np.int64)
                cv = np.clip(np.floor((uv[sel, 1] % 1.0) * th), 0, th - 1).astype(np.int64)
                base[sel] = tex[cv, cu] / 255.0
            instance[idx[sel]] = inst.instance_id
        normals[idx] = nrm
        rgb[idx] = shade(base, nrm, view)
    return Frame(np.clip(rgb, 0, 1).reshape(h, w, 3).astype(np.float32), depth,
                 normals.reshape(h, w, 3).astype(np.float32), instance.reshape(h, w))
