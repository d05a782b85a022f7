"""Tabletop scenes as a robot sees them: objects of four materials on a table, an RGB-D sensor's depth.

A pure function of (seed, index) like every sample. Geometry: a textured table top (y = 0) in a room
(floor, back and side walls), 2-5 graspable objects (3-12 cm bounding radius) standing on it: procedural
shapes, or with ``meshes`` (``render tabletop --meshes DIR``, e.g. ``bgprompt assets household``) real object
meshes from DIR; each frame names its objects (``objects``: "id:name;..."). Camera:
0.4-1.2 m from a target object, looking down 30-70 degrees, a D435-like colour field of view (69 deg).

Materials (bgprompt_core.evaluation.sensor_model.MATERIALS) change the colour image as well as the sensor:
- specular: Blinn-Phong highlight on top of the diffuse shading (white, shininess 30-90);
- dark: albedo times 0.08-0.2;
- transparent: the scene behind (a second render without the glass) seen through a slight tint, with a
  Fresnel-like rim: opacity ``a0 + (1 - a0) (1 - |n.v|)^3``;
- diffuse: as rendered.
The sensor's depth comes from ``sensor_model.simulate`` with the depth behind the glass and the highlights.
"""
from __future__ import annotations

import numpy as np

from bgprompt_core.evaluation import sensor_model as sm

from .camera import View, intrinsics, look_at
from .meshes import box, plane_grid, random_shape
from .packing import pack_sample, sample_rng
from .raster import Instance
from .rotations import pose, random_rotation, rot_x, rot_z, surface

COLOR_HFOV_DEG = 69.0  # D435 colour imager, horizontal field of view


def build_tabletop(rng: np.random.Generator, gen, material_weights: tuple[float, ...]):
    """Instances, the placed objects' (id, material, name), and (position, radius) of each object."""
    from .textures import procedural_texture

    grid = plane_grid()
    tw, td = rng.uniform(1.0, 1.8), rng.uniform(0.7, 1.1)
    th = rng.uniform(0.7, 0.8)  # table height: the floor lies at y = -th
    wall_z = -td / 2 - rng.uniform(0.1, 0.8)
    instances = [
        Instance(grid, surface(np.eye(3), 8, 8, np.array([0, -th, 0])), procedural_texture(rng), 1),  # floor
        Instance(grid, surface(rot_x(np.pi / 2), 8, 4, np.array([0, 1.0, wall_z])), procedural_texture(rng), 2),  # back wall
        Instance(grid, surface(rot_z(-np.pi / 2), 4, 8, np.array([-tw / 2 - rng.uniform(0.3, 1.5), 1.0, 0])),
                 procedural_texture(rng), 3),  # side wall, normal +x
        Instance(box(tw, 0.04, td), pose(np.eye(3), 1.0, np.array([0, -0.02, 0])), gen._texture(rng), 4),
    ]
    objects, placed = [], []
    next_id = 5
    weights = np.asarray(material_weights, float) / np.sum(material_weights)
    for _ in range(int(rng.integers(2, 6))):
        mesh = gen._object_mesh(rng) if gen.mesh_files else random_shape(rng, tuple(gen.cfg.families))
        radius = rng.uniform(0.03, 0.12)
        R = random_rotation(rng, upright=rng.random() < 0.8)
        low = (mesh.vertices @ R.T).min(0)[1] * radius
        for _ in range(20):  # no interpenetration: footprints apart
            p = np.array([rng.uniform(-tw / 2 + 0.15, tw / 2 - 0.15), -low, rng.uniform(-td / 2 + 0.15, td / 2 - 0.15)])
            if all(np.linalg.norm((p - q)[[0, 2]]) > radius + rq + 0.01 for q, rq in placed):
                break
        else:
            continue
        placed.append((p, radius))
        material = int(rng.choice(len(sm.MATERIALS), p=weights))
        instances.append(Instance(mesh, pose(R, radius, p), gen._texture(rng, mesh), next_id))
        objects.append((next_id, material, mesh.name if gen.mesh_files else mesh.meta.get("family", "shape")))
        next_id += 1
    return instances, objects, placed


def robot_view(rng: np.random.Generator, target: np.ndarray, size: int) -> View:
    """A camera 0.4-1.2 m from ``target``, looking down at it 30-70 degrees, from the table's open side."""
    dist = rng.uniform(0.4, 1.2)
    pitch = np.deg2rad(rng.uniform(30, 70))
    yaw = rng.uniform(np.deg2rad(-60), np.deg2rad(60))  # around +z: the wall stays behind the table
    eye = target + dist * np.array([np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)])
    aim = target + rng.normal(0, 0.03, 3)  # the target is near, not exactly at, the image centre
    cam = look_at(eye, aim, roll=np.deg2rad(rng.normal(0, 2)))
    f = (size / 2) / np.tan(np.deg2rad(COLOR_HFOV_DEG) / 2)
    light = np.array([rng.uniform(-0.6, 0.6), -1.0, rng.uniform(-0.8, 0.2)])  # from above (y up): travels down
    light = (cam[:3, :3] @ light) / np.linalg.norm(light)
    ambient = float(rng.uniform(0.25, 0.45))
    return View(intrinsics((size, size), f), cam, size, size, light, ambient, 1 - ambient, background=(0, 0, 0))


def shade_materials(rgb: np.ndarray, behind_rgb: np.ndarray, depth: np.ndarray, normals: np.ndarray,
                    material: np.ndarray, view: View, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Colour image (float [0, 1]) with each material's look, and the specular highlight map in [0, 1]."""
    from bgprompt_core.geometry import camera_rays

    rays = camera_rays(view.K, *depth.shape).astype(np.float64)
    v = -rays / np.linalg.norm(rays, axis=-1, keepdims=True)  # towards the camera
    n = normals.astype(np.float64)
    out = rgb.astype(np.float64).copy()
    dark = material == sm.DARK
    out[dark] *= rng.uniform(0.08, 0.2)
    spec = material == sm.SPECULAR
    half = v - view.light_dir[None, None, :]
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    highlight = np.where(spec, np.clip((n * half).sum(-1), 0, 1) ** rng.uniform(30, 90), 0.0)
    out[spec] = out[spec] * 0.7 + highlight[spec, None]
    glass = material == sm.TRANSPARENT
    if glass.any():
        a0 = rng.uniform(0.08, 0.2)
        cos = np.abs((n * v).sum(-1))
        alpha = (a0 + (1 - a0) * (1 - cos) ** 3)[glass, None]
        tint = np.array([0.85, 0.92, 0.95])
        out[glass] = (1 - alpha) * behind_rgb[glass] * tint + alpha * 0.9
    return np.clip(out, 0, 1), highlight


def tabletop_sample(gen, index: int) -> dict:
    """One tabletop frame: rgb, depth (GT), sensor_depth, behind, material, instance, mask (the target object),
    alpha (255 on every placed object)."""

    cfg = gen.cfg
    rng = sample_rng(cfg.seed, index)
    instances, objects, placed = build_tabletop(rng, gen, cfg.materials)
    target = int(rng.integers(len(objects)))
    for _ in range(10):  # a view from behind a wall sees no object: look again (the first try draws as before)
        view = robot_view(rng, placed[target][0], cfg.size)
        frame = gen.render(instances, view)
        if max(int((frame.instance == oid).sum()) for oid, *_ in objects) >= 50:
            break
    glass_ids = [oid for oid, m, _ in objects if m == sm.TRANSPARENT]
    material = np.zeros(frame.depth.shape, np.uint8)
    for oid, m, _ in objects:
        material[frame.instance == oid] = m
    behind_frame = gen.render([i for i in instances if i.instance_id not in glass_ids], view) if glass_ids else frame
    rgb, highlight = shade_materials(frame.rgb, behind_frame.rgb, frame.depth, frame.normals, material, view, rng)
    frame.rgb = rgb
    sensor = sm.simulate(frame.depth, view.K, sm.preset(cfg.sensor), sensor_rng(cfg.seed, index, cfg.sensor),
                         material, behind_frame.depth, highlight, frame.instance)
    counts = [int((frame.instance == oid).sum()) for oid, *_ in objects]
    if counts[target] < 50:  # hidden behind another object: the most visible one is the target
        target = int(np.argmax(counts))
    mask = frame.instance == objects[target][0]
    out = pack_sample(frame, mask, view, f"tabletop-{index}", sm.MATERIALS[objects[target][1]])
    out["alpha"] = (np.isin(frame.instance, [oid for oid, *_ in objects]) * 255).astype(np.uint8)  # every object
    out.update(material=material, sensor_depth=sensor, behind=behind_frame.depth.astype(np.float32),
               highlight=highlight.astype(np.float16), objects=";".join(f"{oid}:{name}" for oid, _, name in objects))
    return out


def sensor_rng(seed: int, index: int, sensor: str) -> np.random.Generator:
    """The sensor simulation's randomness for frame ``index``: d435-like keeps the stream it always had; other
    presets get their own (so ``eval-grasp --sensor`` re-simulates any preset from the stored scene)."""
    return np.random.default_rng([seed, index, 1] if sensor == "d435-like" else
                                 [seed, index, 1, sum(ord(c) for c in sensor)])


def resimulate(sample: dict, sensor: str, seed: int, index: int) -> np.ndarray:
    """A stored tabletop frame's depth as preset ``sensor`` would read it (needs ``highlight``, rendered since
    issue 24; the d435-like stream of older renders is only reproduced when their sensor was d435-like)."""
    if "highlight" not in sample:
        raise KeyError("this tabletop render has no highlight map (re-render it) to simulate another sensor")
    return sm.simulate(sample["depth"], sample["K"], sm.preset(sensor), sensor_rng(seed, index, sensor),
                       sample["material"], sample["behind"], sample["highlight"].astype(np.float64),
                       sample["instance"])


def object_names(sample: dict) -> dict[int, str]:
    """Instance id -> object name (mesh file stem or shape family) of a tabletop frame."""
    text = str(sample.get("objects", ""))
    return {int(k): v for k, v in (item.split(":", 1) for item in text.split(";") if item)}
