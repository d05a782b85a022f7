"""requirements/lock.txt: the whole environment at one version each, with hashes, and consistent with what we declare.

`make venv` installs the lock with ``--require-hashes``; requirements/*.txt stay the declared source (setup.py reads
them as extras) and `make lock` regenerates the lock from them. These tests fail when the two drift apart.
"""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"


def declared() -> list[Requirement]:
    """Every requirement of requirements/*.txt but the lock, read as setup.py reads them."""
    reqs = []
    for path in sorted((ROOT / "requirements").glob("*.txt")):
        if path == LOCK:
            continue
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                reqs.append(Requirement(line))
    return reqs


def locked(text: str | None = None) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [sha256 hashes])} of a pip-compile lock file."""
    text = LOCK.read_text() if text is None else text
    entries: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.replace("\\\n", " ")):
        block = "\n".join(ln for ln in block.splitlines() if not ln.lstrip().startswith("#")).strip()
        if not block:
            continue
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        assert m, f"lock entry is not pinned with ==: {block[:80]!r}"
        entries[canonicalize_name(m[1])] = (m[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return entries


def missing_from_lock(reqs: list[Requirement], lock: dict[str, tuple[str, list[str]]]) -> list[str]:
    problems = []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name not in lock:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(lock[name][0], prereleases=True):
            problems.append(f"{req} is declared, the lock has {lock[name][0]}")
    return problems


def test_the_lock_covers_every_declared_requirement_at_its_pinned_version():
    lock = locked()
    assert len(lock) > 100  # the whole environment, not only what we pin by hand
    assert missing_from_lock(declared(), lock) == [], "run `make lock` after editing requirements/*.txt"
    # the check itself: a declared pin that the lock does not hold is found
    assert missing_from_lock([Requirement("numpy==1.0.0"), Requirement("not-locked-package==1")], lock) == [
        f"numpy==1.0.0 is declared, the lock has {lock['numpy'][0]}", "not-locked-package==1 is not in the lock"]


def test_every_locked_package_is_pinned_with_hashes_and_torch_is_the_cpu_build():
    lock = locked()
    assert [name for name, (_, hashes) in lock.items() if not hashes] == []
    version, hashes = lock["torch"]
    # a bare torch==2.13.0 from the index is a multi-GB CUDA build; the lock admits only the CPU wheel's hash
    assert version == "2.13.0+cpu" and len(hashes) == 1
    assert "nvidia-cublas" not in " ".join(lock) and not any(n.startswith("nvidia-") for n in lock)
    assert "setuptools" in lock  # the project is installed --no-build-isolation with the locked setuptools


def test_the_lock_is_closed_over_the_installed_dependencies():
    """Walk the declared requirements (with their extras) through the installed packages' metadata: every package
    reached is in the lock at the version installed, so `pip install --require-hashes` has all it needs."""
    lock = locked()
    env = default_environment()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in declared()]
    seen: set[tuple[str, frozenset]] = set()
    problems = []
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed")
            continue
        if name not in lock or lock[name][0] != dist.version:
            problems.append(f"{name} {dist.version} installed, lock has {lock.get(name, ('nothing',))[0]}")
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    assert problems == [], "the venv was not built from the lock (make venv), or the lock misses a dependency"
    assert len(seen) > 100
