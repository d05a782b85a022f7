"""Real textured meshes, taken from wheels on the package index (never committed; pip is the only network use).

- ``bgprompt assets real-meshes --out DIR``: pybullet's objects, the out-of-distribution set of docs/RESULTS.md;
- ``bgprompt assets household --out DIR``: household objects for tabletop scenes (``render tabletop --meshes DIR
  --mesh-up z``, docs/grasp): robosuite's grocery models (bottle, bread, can, cereal box, lemon, milk carton)
  and pybullet's kitchen and toy objects, among them a scanned one (the Stanford bunny), a concave tray (a
  pan-like shape), a mug, a concave box and a shape sorter. Both sets are z-up.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PYBULLET = "pybullet==3.2.7"
ROBOSUITE = "robosuite==1.5.2"
OBJECTS = {  # name -> files under pybullet_data/
    "duck": ["duck.obj", "duck.mtl", "duckCM.png"],
    "bunny": ["bunny.obj"],
    "teddy": ["teddy2_VHACD_CHs.obj"],
    "soccerball": ["soccerball.obj"],
    "mug": ["objects/mug.obj"],
    "domino": ["domino/domino.obj", "domino/domino.mtl", "domino/domino.jpg"],
    "torus": ["torus/torus_textured.obj", "torus/torus_textured.mtl"],
    "jenga": ["jenga/jenga.obj", "jenga/jenga.mtl", "jenga/jenga.png"],
    "lego": ["lego/lego.obj"],
    "tray": ["tray/tray_textured.obj", "tray/tray_textured.mtl", "tray/tray.jpg"],
    **{f"random{i:03d}": [f"random_urdfs/{i:03d}/{i:03d}.obj", f"random_urdfs/{i:03d}/{i:03d}.mtl"] for i in range(30)},
}


def _wheel(spec: str, tmp: str, given: str | Path | None) -> Path:
    if given is not None:
        return Path(given)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, spec], check=True)
    return next(Path(tmp).glob(f"{spec.split('==')[0]}-*.whl"))


# name -> (wheel, files under the wheel's data root); robosuite's materials point at ../../textures/
HOUSEHOLD = {
    **{k: (ROBOSUITE, [f"robosuite/models/assets/objects/meshes/{k}.obj", f"robosuite/models/assets/objects/meshes/{k}.mtl",
                       f"robosuite/models/assets/textures/{tex}.png"])
       for k, tex in (("bottle", "glass"), ("bread", "bread"), ("can", "can"), ("cereal", "cereal"),
                      ("lemon", "lemon"), ("milk", "ceramic"))},
    "bunny": (PYBULLET, ["pybullet_data/bunny.obj"]),  # the Stanford scan
    "mug": (PYBULLET, ["pybullet_data/objects/mug.obj"]),
    "tray": (PYBULLET, ["pybullet_data/tray/tray_textured.obj", "pybullet_data/tray/tray_textured.mtl",
                        "pybullet_data/tray/tray.jpg"]),
    "duck": (PYBULLET, ["pybullet_data/duck.obj", "pybullet_data/duck.mtl", "pybullet_data/duckCM.png"]),
    "teddy": (PYBULLET, ["pybullet_data/teddy2_VHACD_CHs.obj"]),
    "concave_box": (PYBULLET, ["pybullet_data/toys/concave_box.obj"]),
    "shape_sorter": (PYBULLET, ["pybullet_data/toys/shape_sorter.obj"]),
    "jenga": (PYBULLET, ["pybullet_data/jenga/jenga.obj", "pybullet_data/jenga/jenga.mtl", "pybullet_data/jenga/jenga.png"]),
    "domino": (PYBULLET, ["pybullet_data/domino/domino.obj", "pybullet_data/domino/domino.mtl",
                          "pybullet_data/domino/domino.jpg"]),
    "lego": (PYBULLET, ["pybullet_data/lego/lego.obj"]),
}


def household_meshes(out: str | Path, wheels: dict[str, str | Path] | None = None) -> Path:
    """Extract ``HOUSEHOLD`` into ``out/<name>/`` (z-up; material image paths made local). ``wheels``: package
    name -> a wheel file to use instead of downloading it."""
    import re

    out = Path(out)
    wheels = wheels or {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {spec: _wheel(spec, tmp, wheels.get(spec.split("==")[0])) for spec in {w for w, _ in HOUSEHOLD.values()}}
        for spec, wheel in paths.items():
            with zipfile.ZipFile(wheel) as zf:
                names = set(zf.namelist())
                for obj, (src_spec, files) in HOUSEHOLD.items():
                    if src_spec != spec:
                        continue
                    (out / obj).mkdir(parents=True, exist_ok=True)
                    for member in files:
                        if member not in names:
                            raise FileNotFoundError(f"{member} is not in {wheel}")
                        data = zf.read(member)
                        if member.endswith(".mtl"):  # map_Kd ../../textures/x.png -> x.png (copied beside it)
                            data = re.sub(rb"(map_Kd\s+)\S*/", rb"\1", data)
                        (out / obj / Path(member).name).write_bytes(data)
    return out


def real_meshes(out: str | Path, wheel: str | Path | None = None) -> Path:
    """Extract the meshes of ``OBJECTS`` into ``out/<name>/`` (z-up files: render with --mesh-up z)."""
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PYBULLET],
                           check=True)
            wheel = next(Path(tmp).glob("pybullet-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for obj, files in OBJECTS.items():
                (out / obj).mkdir(parents=True, exist_ok=True)
                for f in files:
                    member = f"pybullet_data/{f}"
                    if member not in names:
                        raise FileNotFoundError(f"{member} is not in {wheel}")
                    with zf.open(member) as src, open(out / obj / Path(f).name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    return out
