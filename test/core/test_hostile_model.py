"""A model directory that asks for its own code (``auto_map``) is refused, never run and never prompts.

The directory's config names an architecture transformers does not know, so transformers itself WOULD ask on stdin
(``trust_remote_code=None``) and WOULD run the code (``True``): the second test shows both traps firing against
transformers directly, so the first test's traps are able to catch a loader that lets it get that far.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from bgprompt_core.errors import ModelLoadError
from bgprompt_core.networks.loading import load_depth_net


def _evil_dir(tiny_model_dir, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(tiny_model_dir, evil)
    cfg = json.loads((evil / "config.json").read_text())
    cfg["model_type"] = "evil-depth"  # unknown to transformers: only the shipped code could build it
    cfg["auto_map"] = {"AutoConfig": "evil_code.EvilConfig", "AutoModelForDepthEstimation": "evil_code.EvilModel"}
    (evil / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "ran"
    (evil / "evil_code.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    return evil, marker


def test_remote_code_in_a_model_directory_is_refused_without_asking(tiny_model_dir, tmp_path, monkeypatch):
    evil, marker = _evil_dir(tiny_model_dir, tmp_path)
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("transformers asked on stdin"))
    with pytest.raises(ModelLoadError, match="remote code"):
        load_depth_net(str(evil), local_only=True)
    assert not marker.exists()


_TRANSFORMERS_ITSELF = """
import builtins, sys
from transformers import AutoConfig
asked = []
builtins.input = lambda *a: asked.append(a) or "no"
try:
    AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=None, local_files_only=True)
except Exception:
    pass
try:
    AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True, local_files_only=True)
except Exception:
    pass
print("asked" if asked else "silent")
"""


def test_the_traps_fire_when_transformers_gets_the_directory(tiny_model_dir, tmp_path):
    """The mutant "a loader that hands the directory to transformers": asked on stdin with trust_remote_code=None,
    the shipped code run with True (the marker file appears). In a child, its module cache in tmp_path."""
    evil, marker = _evil_dir(tiny_model_dir, tmp_path)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _TRANSFORMERS_ITSELF, str(evil)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "asked" and marker.read_text() == "pwned"
