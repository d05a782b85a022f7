"""Fresh Python environments built the way users build them, for the install tests and `make bench`.

- ``robot_venv``: `python -m venv` (no system site packages) + `pip install ".[robot,ros]"`: the torch-free robot
  node from pip wheels. torch, transformers and scipy must not be importable in it (checked).
- ``apt_like_system``: a stand-in for an apt ROS install. A prefix holding the rclpy wheels as apt puts ROS under
  /opt/ros/jazzy (reached through its setup.bash: PYTHONPATH, LD_LIBRARY_PATH, AMENT_PREFIX_PATH), with colcon and
  OpenCV beside them; the base interpreter's own site-packages (numpy, PyYAML, scipy here) play apt's
  /usr/lib/python3/dist-packages.

Wheels come from the package index and local wheel dirs exactly as pip is configured here (as CI does), once,
into a wheelhouse (~/.cache/bgprompt/wheelhouse, or $BGPROMPT_WHEELHOUSE; `make wheelhouse`, outside the tests'
network namespace); later builds install from it with --no-index.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# outside the checkout (CI clones afresh each run; pip's own HTTP cache is not kept on these machines)
WHEELHOUSE = Path(os.environ.get("BGPROMPT_WHEELHOUSE") or
                  Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bgprompt" / "wheelhouse")
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # the interpreter the dev venv was made from
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
FORBIDDEN = ("torch", "transformers", "scipy")  # never in the robot runtime


def requirement_lines(*names: str) -> list[str]:
    out = []
    for name in names:
        for line in (ROOT / "requirements" / f"{name}.txt").read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                out.append(line)
    return out


def clean_env(**extra: str) -> dict:
    """This process's environment without the dev venv's: no ros-wheels bootstrap state, no PYTHONPATH,
    no AMENT/COLCON paths, the dev venv's bin off PATH (a child python of another venv needs this)."""
    drop = ("_ROS_WHEELS_BOOTSTRAP_COMPLETE", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
            "AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(extra)
    return env


def _run(cmd: list[str], timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return proc


def wheelhouse(requirements: list[str]) -> Path:
    """WHEELHOUSE holding wheels for ``requirements`` (+ setuptools and wheel to build this package); downloaded
    once per requirement set with pip's own configuration (index + local wheel dirs)."""
    wanted = sorted(requirements + ["setuptools", "wheel"])
    stamp = WHEELHOUSE / f".{hashlib.sha256(' '.join(wanted).encode()).hexdigest()[:16]}"
    if not stamp.is_file():
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        try:
            _run([BASE_PYTHON, "-m", "pip", "download", "--quiet", "--dest", WHEELHOUSE, *wanted], env=clean_env())
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nthe wheels could not be downloaded: tests run in a network namespace "
                               f"without the package index (tools/loopback-run); fill {WHEELHOUSE} first with "
                               f"`make wheelhouse`") from None
        stamp.write_text("\n".join(wanted) + "\n")
    return WHEELHOUSE


def pip_offline(python: Path | str, *args: str, env: dict | None = None, cwd: Path | None = None):
    return _run([python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", WHEELHOUSE, *args],
                env=env or clean_env(), cwd=cwd)


def robot_venv(dest: Path) -> Path:
    """A fresh venv at ``dest`` with `pip install ".[robot,ros]"` from this checkout; raises if torch,
    transformers or scipy is importable in it. Returns its python."""
    wheelhouse(requirement_lines("robot", "ros"))
    _run([BASE_PYTHON, "-m", "venv", dest], env=clean_env())
    python = dest / "bin" / "python"
    pip_offline(python, f"{ROOT}[robot,ros]")
    leaked = importable(python, FORBIDDEN)
    if leaked:
        raise RuntimeError(f"the robot venv can import {leaked}: it must hold none of {FORBIDDEN}")
    return python


def importable(python: Path | str, modules, env: dict | None = None) -> list[str]:
    """Which of ``modules`` the interpreter ``python`` can find (find_spec: nothing is imported)."""
    code = ("import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] "
            "if importlib.util.find_spec(m) is not None))")
    out = _run([python, "-c", code, *modules], env=env or clean_env()).stdout.split()
    return out


# rosdep keys -> what apt would install for them, as wheels into the stand-in prefix (rclpy & co) or already in
# the base interpreter (python3-numpy, python3-yaml, python3-scipy)
APT_LIKE = [r for r in requirement_lines("ros") if r.startswith("ros-jazzy-")] + [
    next(r for r in requirement_lines("robot") if r.startswith("opencv")),  # python3-opencv
    next(r for r in requirement_lines("test") if r.startswith("colcon-common-extensions")),  # python3-colcon-...
]


def apt_like_system(prefix: Path) -> Path:
    """Install APT_LIKE into ``prefix`` (pip --prefix, as apt fills /opt/ros/jazzy) and write prefix/setup.bash
    exporting what /opt/ros/jazzy/setup.bash exports. Returns the setup.bash."""
    wheelhouse(requirement_lines("robot", "ros") + APT_LIKE)
    pip_offline(BASE_PYTHON, "--prefix", prefix, "--no-warn-script-location", *APT_LIKE)
    site = prefix / "lib" / PY / "site-packages"
    libs = [prefix / "lib"] + sorted(site.glob("ros_*.libs"))
    setup = prefix / "setup.bash"
    setup.write_text(f"""# stand-in for /opt/ros/jazzy/setup.bash (test/install_envs.py)
export ROS_DISTRO=jazzy ROS_VERSION=2 ROS_PYTHON_VERSION=3
export AMENT_PREFIX_PATH={prefix}${{AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}}
export PYTHONPATH={site}${{PYTHONPATH:+:$PYTHONPATH}}
export LD_LIBRARY_PATH={':'.join(map(str, libs))}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}
export PATH={prefix}/bin:$PATH
# the wheels' own bootstrapper (a .pth, never read from PYTHONPATH) is replaced by the exports above
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
""")
    return setup


if __name__ == "__main__":  # `make wheelhouse`: download what the install tests and the bench install, once
    wheelhouse(requirement_lines("robot", "ros"))
    wheelhouse(requirement_lines("robot", "ros") + APT_LIKE)
    print(f"wheelhouse ready: {WHEELHOUSE}")
