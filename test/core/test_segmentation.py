"""rembg, offline: exactly the files rembg 2.0.86 reads, refusals that name them, and a torch-free route."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bgprompt_core.errors import ModelLoadError
from bgprompt_core.frame.segmentation import RembgSegmenter, expected_model_paths, rembg_home

ENVS = [{}, {"XDG_DATA_HOME": "xdg"}, {"REMBG_HOME": "rh"}, {"U2NET_HOME": "u2"},
        {"REMBG_HOME": "rh", "U2NET_HOME": "u2", "XDG_DATA_HOME": "xdg"}, {"REMBG_HOME": "rh", "XDG_DATA_HOME": "xdg"}]


@pytest.mark.parametrize("env", ENVS, ids=lambda e: "+".join(e) or "none")
def test_the_model_paths_are_the_ones_rembg_itself_reads(env, tmp_path, monkeypatch):
    """Against rembg's own rules (BaseSession.model_dir / legacy_home, as resolve_existing uses them), not ours."""
    pytest.importorskip("rembg")
    from rembg.sessions.u2net import U2netSession

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("XDG_DATA_HOME", "REMBG_HOME", "U2NET_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, str(tmp_path / value))
    assert expected_model_paths("u2net") == [Path(U2netSession.model_dir()) / "u2net.onnx",
                                             Path(U2netSession.legacy_home()) / "u2net.onnx"]
    assert rembg_home() == Path(U2netSession.rembg_home())


def test_a_model_where_rembg_does_not_look_is_refused_before_rembg_could_download(tmp_path, monkeypatch):
    """~/.rembg/u2net.onnx was listed and accepted, though rembg 2.0.86 never reads it: rembg then downloaded."""
    rembg = pytest.importorskip("rembg")
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("XDG_DATA_HOME", "REMBG_HOME", "U2NET_HOME"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / ".rembg").mkdir()
    (tmp_path / ".rembg" / "u2net.onnx").write_bytes(b"a model in the wrong place")
    monkeypatch.setattr(rembg, "new_session", lambda *a, **k: pytest.fail("rembg would download u2net"))
    with pytest.raises(ModelLoadError) as err:
        RembgSegmenter("u2net")
    msg = str(err.value)
    assert str(tmp_path / ".rembg" / "models" / "u2net" / "u2net.onnx") in msg
    assert str(tmp_path / ".u2net" / "u2net.onnx") in msg and str(tmp_path / ".rembg" / "u2net.onnx'") not in msg


def test_cloud_custom_and_outside_models_are_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelLoadError, match="cannot run offline"):
        RembgSegmenter("withoutbg")  # a paid web service: every frame would leave the robot
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="only from inside its model directories"):
        RembgSegmenter(str(outside))  # rembg raised a bare ValueError
    inside = tmp_path / "home" / "broken.onnx"
    inside.parent.mkdir()
    inside.write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError, match="rembg cannot load model"):
        RembgSegmenter(str(inside))


_TORCH_FREE = """
import sys
import numpy as np
from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator
cfg = EstimatorConfig(backend="onnxruntime", onnx=sys.argv[1], segmentation="rembg", rembg_model=sys.argv[2])
img = np.full((120, 160, 3), 250, np.uint8)
img[30:90, 40:120] = 20
res = ObjectDepthEstimator(cfg).estimate(img, np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]]))
print(int(res.valid[35:85, 45:115].sum()), int(res.valid.sum()), "torch" in sys.modules)
"""


def test_rembg_with_an_exported_graph_never_imports_torch(tmp_path):
    """The robot route: an exported graph plus rembg masks. segmentation.py imported torch through its error class."""
    pytest.importorskip("rembg")
    from handmade_graphs import write_dark_segmenter, write_graph

    graph = write_graph(tmp_path / "g.onnx", hw=(64, 64))
    (tmp_path / "home").mkdir()
    seg = write_dark_segmenter(tmp_path / "home" / "dark.onnx")
    env = {**os.environ, "U2NET_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-c", _TORCH_FREE, str(graph), str(seg)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    inside, total, torch_imported = proc.stdout.split()
    assert int(inside) == 50 * 70 and int(total) < 62 * 82 and torch_imported == "False"
