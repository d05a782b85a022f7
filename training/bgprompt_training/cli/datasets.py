"""`bgprompt render` and `assets`: rendered data sets and the real meshes they can use."""
from __future__ import annotations

import argparse
from pathlib import Path

from bgprompt_core.method.config import ConfigError

from .common import shared


def _cmd_render(args: argparse.Namespace) -> int:
    import time

    from ..render.generate import RenderConfig
    from ..render.preview import contact_sheet
    from ..render.store import render_dataset

    cfg = RenderConfig(kind=args.kind, size=args.size, seed=args.seed, families=tuple(args.families),
                       meshes=args.meshes, mesh_up=args.mesh_up, textures=args.textures,
                       elevation=tuple(args.elevation), roll_jitter=args.roll_jitter, offcenter=args.offcenter,
                       crop=args.crop, closeup=args.closeup, sensor=args.sensor, materials=tuple(args.materials))
    t0 = time.perf_counter()
    manifest = render_dataset(cfg, args.out, args.count, backend=args.backend, workers=args.workers,
                              shard_size=args.shard_size)
    dt = time.perf_counter() - t0
    print(f"rendered {manifest['count']} {cfg.kind} at {cfg.size}px with {','.join(manifest['backend'])} in "
          f"{dt:.1f} s ({manifest['count'] / dt:.1f}/s) -> {args.out}")
    if manifest["skipped_meshes"]:
        print(f"skipped {len(manifest['skipped_meshes'])} unreadable mesh files: {manifest['skipped_meshes']}")
    if args.preview:
        from ..data.rendered import RenderedDataset

        ds = RenderedDataset(args.out)
        path = contact_sheet([ds.raw(i) for i in range(min(args.preview, len(ds)))], Path(args.out) / "preview.png")
        print(f"preview: {path}")
    return 0


def register_render(sub) -> None:
    from ..render.meshes import FAMILIES
    p = sub.add_parser("render", parents=shared("seed"),
                       help="render synthetic objects or indoor scenes with exact depth, masks, normals",
                       description="Render a data set: `objects` (one object per image, ABO-like camera on the upper "
                                   "hemisphere, white background, RGBA kept) or `scenes` (closed rooms with tables, "
                                   "objects and clutter; full-image depth) or `tabletop` (2-5 objects of four "
                                   "materials on a table seen by a robot from 0.4-1.2 m, 30-70 degrees down, with a "
                                   "simulated RGB-D sensor's depth beside the ground truth; the mask is the target "
                                   "object, the others are instances). Every sample is reproducible from "
                                   "(seed, index). Output: npz shards + manifest.json (conventions and generator "
                                   "config).")
    p.add_argument("kind", choices=["objects", "scenes", "tabletop"])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--count", type=int, required=True, help="number of samples")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (square)")
    p.add_argument("--backend", choices=["auto", "gl", "numpy"], default="auto",
                   help="gl: moderngl on EGL (fast); numpy: pure-numpy ray caster; auto: gl, else numpy")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (one shard each at a time)")
    p.add_argument("--shard-size", type=int, default=64, help="samples per npz shard")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                   help="procedural shape families to draw from")
    p.add_argument("--meshes", help="folder of real meshes (OBJ/GLB/PLY...) used instead of procedural shapes")
    p.add_argument("--mesh-up", choices=["y", "z"], default="y", help="up axis of the mesh files")
    p.add_argument("--textures", help="folder of material images used besides procedural textures")
    p.add_argument("--elevation", nargs=2, type=float, default=[0.0, 75.0], metavar=("MIN", "MAX"),
                   help="camera elevation range in degrees (objects)")
    p.add_argument("--roll-jitter", type=float, default=0.0, help="camera roll std in degrees (objects)")
    p.add_argument("--offcenter", type=float, default=0.0,
                   help="max off-centre shift of the object, fraction of half the image (objects)")
    p.add_argument("--crop", type=float, default=0.0, help="probability of a close view cutting the object (objects)")
    p.add_argument("--closeup", type=float, default=0.0,
                   help="probability of a close view of one object in its room (scenes; mini uses 0.5)")
    from bgprompt_core.evaluation.sensor_model import MATERIALS, SENSORS

    p.add_argument("--sensor", choices=SENSORS, default="d435-like",
                   help="tabletop: simulated RGB-D sensor (d435-like: active stereo; none: perfect depth)")
    p.add_argument("--materials", nargs=len(MATERIALS), type=float, default=[1.0] * len(MATERIALS),
                   metavar=tuple(m.upper() for m in MATERIALS), help="tabletop: weights of the object materials")
    p.add_argument("--preview", type=int, default=0, metavar="N",
                   help="also write preview.png: RGB | depth | normals | mask for the first N samples")
    p.set_defaults(func=_cmd_render)


def _cmd_assets(args: argparse.Namespace) -> int:
    from ..assets import HOUSEHOLD, OBJECTS, household_meshes, real_meshes

    if args.kind == "household":
        wheels = dict(w.split("=", 1) for w in args.wheel or [])
        out = household_meshes(args.out, wheels)
        print(f"extracted {len(HOUSEHOLD)} household meshes (z-up) -> {out}")
        return 0
    if args.wheel and len(args.wheel) > 1:
        raise ConfigError("real-meshes takes one --wheel (pybullet's)")
    out = real_meshes(args.out, args.wheel[0] if args.wheel else None)
    print(f"extracted {len(OBJECTS)} real meshes (z-up) -> {out}")
    return 0


def register_assets(sub) -> None:
    p = sub.add_parser("assets", help="fetch real textured meshes (pybullet's objects) for out-of-distribution tests",
                       description="Download the pybullet wheel from the package index with pip and extract a fixed "
                                   "list of object meshes (duck, bunny, teddy, mug, domino, jenga, lego, tray, torus, "
                                   "soccer ball and 30 random shapes) with their materials. Render them with "
                                   "`bgprompt render objects --meshes DIR --mesh-up z`.")
    p.add_argument("kind", choices=["real-meshes", "household"],
                   help="real-meshes: pybullet's objects (docs/RESULTS.md's out-of-distribution set); household: "
                        "robosuite's groceries and pybullet's kitchen objects for `render tabletop --meshes DIR "
                        "--mesh-up z` (docs/grasp)")
    p.add_argument("--out", required=True)
    p.add_argument("--wheel", nargs="+", help="use these wheels instead of downloading them (real-meshes: a path; "
                                              "household: pybullet=PATH robosuite=PATH)")
    p.set_defaults(func=_cmd_assets)
