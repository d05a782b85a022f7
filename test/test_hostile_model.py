"""A model directory that asks for its own code (``auto_map``) is refused, never run and never prompts."""
import json
import shutil

import pytest

from bgprompt_core.depth_networks import ModelLoadError, load_depth_net


def test_remote_code_in_a_model_directory_is_refused_without_asking(tiny_model_dir, tmp_path, monkeypatch):
    evil = tmp_path / "evil"
    shutil.copytree(tiny_model_dir, evil)
    cfg = json.loads((evil / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil_code.EvilConfig", "AutoModelForDepthEstimation": "evil_code.EvilModel"}
    (evil / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "ran"
    (evil / "evil_code.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("transformers asked on stdin"))
    with pytest.raises(ModelLoadError, match="remote code"):
        load_depth_net(str(evil), local_only=True)
    assert not marker.exists()
