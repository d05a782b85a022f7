"""Real textured meshes for the out-of-distribution set, taken from the pybullet wheel on the package index.

The files are never committed: ``bgprompt assets real-meshes --out DIR`` downloads the wheel with pip
(no other network access) and extracts a fixed list of object meshes with their materials.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PYBULLET = "pybullet==3.2.7"
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
