"""On-disk format of rendered data: compressed npz shards plus ``manifest.json``.

Shard k holds samples [k * shard_size, (k + 1) * shard_size); each sample depends only on
(seed, index), so shards can be rendered by parallel workers and the same command twice writes
byte-identical files (npz members carry a fixed 1980 timestamp).
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bgprompt_core.atomic import atomic_write
from bgprompt_core.method.config import ConfigError

from .generate import Generator, RenderConfig

FORMAT = "bgprompt-render"
FORMAT_VERSION = 1
ARRAYS = ("rgb", "alpha", "depth", "mask", "normals", "instance", "K", "cam_from_world")
OPTIONAL_ARRAYS = ("material", "sensor_depth", "behind", "highlight", "objects")  # tabletop scenes
CONVENTIONS = {
    "depth": "z-depth along the optical axis, float32, metres; 0 = no surface",
    "normals": "unit normals in the camera optical frame (x right, y down, z forward), facing the camera; 0 = none",
    "intrinsics": "OpenCV pinhole K; pixel centres at integer coordinates",
    "pose": "cam_from_world 4x4; world is y-up, metres",
    "mask": "objects: the object; scenes: placed objects (not room surfaces, tables or clutter); tabletop: the "
            "target object (the others are in instance)",
    "material": "tabletop: per pixel, index into (diffuse, specular, transparent, dark); 0 off the objects",
    "sensor_depth": "tabletop: the simulated RGB-D sensor's z-depth, float32 metres, 0 = no reading",
    "behind": "tabletop: z-depth of the scene without its transparent objects (what the sensor sees through them)",
    "highlight": "tabletop: specular highlight intensity in [0, 1], float16 (re-simulating another sensor needs it)",
    "objects": "tabletop: the frame's objects as 'id:name;...' (mesh file stem, or the procedural shape family)",
    "rgb": "uint8 sRGB-like, Lambert + ambient shading; alpha: 255 on the foreground mask (tabletop: on every object)",
}


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npz"


@lru_cache(maxsize=2)
def _generator(cfg: RenderConfig, backend: str) -> Generator:
    """One generator (and so one EGL context) per process and config."""
    return Generator(cfg, backend)


def render_shard(cfg: RenderConfig, backend: str, out: Path, k: int, start: int, stop: int) -> tuple[int, str, list[str]]:
    gen = _generator(cfg, backend)
    samples = [gen.sample(i) for i in range(start, stop)]
    arrays = {key: np.stack([s[key] for s in samples]) for key in ARRAYS + OPTIONAL_ARRAYS if key in samples[0]}
    arrays["object_id"] = np.array([s["object_id"] for s in samples])
    arrays["family"] = np.array([s["family"] for s in samples])
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(out / shard_name(k), write)
    return k, gen.backend, gen.skipped_meshes


def render_dataset(cfg: RenderConfig, out: str | Path, count: int, backend: str = "auto", workers: int = 1,
                   shard_size: int = 64, progress: bool = True) -> dict:
    """Render ``count`` samples into ``out`` (shards + manifest.json); returns the manifest."""
    if count <= 0:
        raise ConfigError(f"count must be positive, got {count}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(k, s, min(s + shard_size, count)) for k, s in enumerate(range(0, count, shard_size))]
    backends, skipped = set(), set()
    bar = tqdm(total=count, unit="img", desc=f"render {cfg.kind}", disable=not progress)
    if workers <= 1:
        for k, s, e in jobs:
            _, be, sk = render_shard(cfg, backend, out, k, s, e)
            backends.add(be)
            skipped |= set(sk)
            bar.update(e - s)
    else:
        with ProcessPoolExecutor(workers) as pool:
            futures = {pool.submit(render_shard, cfg, backend, out, k, s, e): e - s for k, s, e in jobs}
            for fut in futures:
                _, be, sk = fut.result()
                backends.add(be)
                skipped |= set(sk)
                bar.update(futures[fut])
    bar.close()
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": cfg.kind, "count": count,
        "size": [cfg.size, cfg.size], "shard_size": shard_size,
        "shards": [{"file": shard_name(k), "count": e - s} for k, s, e in jobs],
        "units": "metres", "conventions": CONVENTIONS, "generator": cfg.to_dict(),
        "backend": sorted(backends), "skipped_meshes": sorted(skipped),
    }
    if cfg.meshes:  # the meshes the objects were drawn from (their names also label each tabletop object)
        from .meshes import load_mesh_folder

        manifest["mesh_files"] = [str(p.relative_to(cfg.meshes)) for p in load_mesh_folder(cfg.meshes)]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no manifest.json (not a `bgprompt render` output directory)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not a readable manifest ({type(exc).__name__}); re-render the data set") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise ConfigError(f"{path}: not a `bgprompt render` manifest (no list of shards)")
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ConfigError(f"{path}: format version {manifest['format_version']} is newer than supported ({FORMAT_VERSION})")
    return manifest
