"""Tests only: a directory whose file system fills up, for the bag writers' full-disk behaviour.

Two kinds, each a real refusal by the kernel (nothing in the code under test is mocked):
- ``tmpfs``: a tmpfs of ``size`` bytes mounted on the directory (root, or wherever mounting is permitted).
  The free space is honest, so the writer's free-space check sees the disk fill up and stops before it is full.
- ``fsize``: a file size limit (RLIMIT_FSIZE) on a child process; the file system has room but every write past
  ``size`` bytes fails with EFBIG, as a quota (EDQUOT) or another process filling the disk (ENOSPC) would make it
  fail unannounced: the writer's salvage path. Works for any user.
"""
from __future__ import annotations

import contextlib
import resource
import subprocess
from pathlib import Path

import pytest

KINDS = ("tmpfs", "fsize")


@contextlib.contextmanager
def full_disk(kind: str, root: Path, size: int):
    """(directory, preexec_fn for the child process that writes there)."""
    path = root / f"small-{kind}"
    path.mkdir()
    if kind == "fsize":
        yield path, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); the fsize case covers it")
    try:
        yield path, None
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)

