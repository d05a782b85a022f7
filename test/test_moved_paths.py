"""Old flat module paths of bgprompt_core (before issue 30's subpackages) still import, and say where to."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from bgprompt_core._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_new_home_exists(old):
    assert importlib.import_module("bgprompt_core." + MOVED[old]).__name__ == "bgprompt_core." + MOVED[old]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-c", code],
                          capture_output=True, text=True, timeout=120)


def test_an_old_module_path_is_the_new_module_and_names_it():
    run = _run("import bgprompt_core.estimator as old, bgprompt_core.frame.estimator as new\n"
               "assert old is new and new.__spec__.name == 'bgprompt_core.frame.estimator'\n"
               "from bgprompt_core import fusion\n"
               "assert fusion.__name__ == 'bgprompt_core.rgbd.fusion'\n")
    assert run.returncode == 0, run.stderr
    assert "bgprompt_core.estimator moved to bgprompt_core.frame.estimator" in run.stderr
    assert "bgprompt_core.fusion moved to bgprompt_core.rgbd.fusion" in run.stderr


def test_a_name_of_an_old_module_that_is_a_package_now():
    run = _run("from bgprompt_core.runtime import build_runtime\n"
               "from bgprompt_core.runtime.build import build_runtime as new\n"
               "assert build_runtime is new\n")
    assert run.returncode == 0, run.stderr
    assert "bgprompt_core.runtime.build_runtime moved to bgprompt_core.runtime.build.build_runtime" in run.stderr


def test_a_name_that_never_existed_is_an_attribute_error():
    run = _run("import bgprompt_core.runtime as r\nr.no_such_name\n")
    assert "AttributeError" in run.stderr and "no_such_name" in run.stderr
