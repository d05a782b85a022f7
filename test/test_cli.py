"""The `bgprompt` command: help on every verb, and the verbs of the core, run as users run them."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bgprompt_core.prompts import fourier_scale
from bgprompt_training.cli import build_parser

# the console script of the interpreter running the tests (its venv), else whatever is on PATH
_VENV_SCRIPT = Path(sys.executable).parent / "bgprompt"
BGPROMPT = str(_VENV_SCRIPT) if _VENV_SCRIPT.exists() else shutil.which("bgprompt")


def _run(*args, check=True):
    assert BGPROMPT, "the bgprompt console script is not installed (pip install -e .)"
    proc = subprocess.run([BGPROMPT, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _verbs():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    return sorted(sub.choices)


def test_top_level_help_lists_every_verb():
    out = _run("--help").stdout
    for verb in _verbs():
        assert verb in out


@pytest.mark.parametrize("verb", _verbs())
def test_every_verb_has_help(verb):
    out = _run(verb, "--help").stdout
    assert f"usage: bgprompt {verb}" in out and len(out.splitlines()) > 3


def test_models_lists_registry_as_json():
    specs = json.loads(_run("models", "--json").stdout)
    names = {s["name"] for s in specs}
    assert {"dpt-large", "dpt-hybrid", "depth-anything-v2-small", "zoedepth-nyu-kitti", "glpn-nyu"} <= names


def test_import_prompt_then_prompt_info(tmp_path):
    spectrum = torch.randn(1, 3, 16, 9, 2) * 0.01
    torch.save({"state_dict": {"module.optimized_distortion.spectrum_real_imag_t": spectrum,
                               "module.optimized_distortion.scale": fourier_scale(16, 16)}}, tmp_path / "a.pth.tar")
    out = tmp_path / "a.safetensors"
    _run("import-prompt", str(tmp_path / "a.pth.tar"), "--network", "dpt-large", "--out", str(out))
    info = json.loads(_run("prompt-info", str(out)).stdout)
    assert info["prompt"]["height"] == 16 and info["network"]["name"] == "dpt-large"


def test_errors_are_one_clear_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    proc = _run("prompt-info", str(bad), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("bgprompt prompt-info: error:") and "Traceback" not in proc.stderr


def test_every_train_config_field_is_a_flag_of_the_same_name():
    """`bgprompt train` builds TrainConfig from its argument names: a field without a flag would break it."""
    import dataclasses

    from bgprompt_training.cli import build_parser
    from bgprompt_training.train import TrainConfig

    args = build_parser().parse_args(["train", "--model", "m", "--data", "d", "--out", "o.safetensors",
                                      "--no-bias", "--val-every", "7", "--prompt", "pnet"])
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= set(vars(args))
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    assert (cfg.bias, cfg.val_every, cfg.prompt, cfg.val) == (False, 7, "pnet", [])
    with pytest.warns(DeprecationWarning, match="--prompt 1bg"):
        assert TrainConfig(model="m", data=["d"], prompt="single").prompt == "1bg"


def test_a_bug_keeps_its_traceback_while_project_errors_are_one_line(monkeypatch, capsys):
    """Only the project's own errors become 'error:' lines (exit 2); anything else is a bug and propagates."""
    from bgprompt_core.config import ConfigError
    from bgprompt_training import cli

    def boom(args):
        raise KeyError("a real bug")

    def user_error(args):
        raise ConfigError("--count must be positive")

    monkeypatch.setattr(cli, "_cmd_models", boom)
    with pytest.raises(KeyError):
        cli.main(["models"])
    monkeypatch.setattr(cli, "_cmd_models", user_error)
    assert cli.main(["models"]) == 2
    assert capsys.readouterr().err.strip() == "bgprompt models: error: --count must be positive"
