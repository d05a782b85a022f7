"""The `bgprompt` command: help on every verb, and the verbs of the core, run as users run them."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bgprompt_core.method.prompts import fourier_scale
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
    from bgprompt_core.method.config import ConfigError
    from bgprompt_training import cli
    from bgprompt_training.cli import info

    def boom(args):
        raise KeyError("a real bug")

    def user_error(args):
        raise ConfigError("--count must be positive")

    monkeypatch.setattr(info, "_cmd_models", boom)
    with pytest.raises(KeyError):
        cli.main(["models"])
    monkeypatch.setattr(info, "_cmd_models", user_error)
    assert cli.main(["models"]) == 2
    assert capsys.readouterr().err.strip() == "bgprompt models: error: --count must be positive"


# --- predict: masks of every kind users have, the same way up as the image --------------------------------------
H, W = 120, 160
BOX_A = (slice(20, 60), slice(20, 70))  # rows, cols: two objects, off-centre so that a rotation shows
BOX_B = (slice(70, 110), slice(90, 150))


def _photo():
    rng = np.random.default_rng(0)
    return rng.integers(40, 250, (H, W, 3), dtype=np.uint8)  # every channel non-zero everywhere


def _save_png(path, array, mode=None, palette=None, orientation=None):
    from PIL import Image

    im = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if palette is not None:
        im.putpalette(palette)
    exif = im.getexif()
    if orientation:
        exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes())
    return str(path)


def _boxes(a=1, b=2):
    labels = np.zeros((H, W), np.uint8)
    labels[BOX_A], labels[BOX_B] = a, b
    return labels


def _mask_case(kind, tmp_path):
    """(image path, mask path, expected labels as displayed) for one kind of mask file."""
    photo = _photo()
    image = _save_png(tmp_path / "f.png", photo)
    labels = _boxes()
    if kind == "palette":  # DAVIS colours: index 1 dark red, 2 dark green (blue 0 in both: was "empty mask")
        palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)
        return image, _save_png(tmp_path / "m.png", labels, "P", palette), labels
    if kind == "rgba":  # a cut-out: the photo with alpha 255 on object A only (was: the whole frame one object)
        rgba = np.dstack([photo, np.where(labels == 1, 255, 0).astype(np.uint8)])
        return image, _save_png(tmp_path / "m.png", rgba, "RGBA"), (labels == 1).astype(np.uint8)
    if kind == "labels":  # 8-bit labels 1 and 2 (was: one object)
        return image, _save_png(tmp_path / "m.png", labels), labels
    if kind == "exif":  # both files carry orientation 3 (was: image rotated, mask not: depth 0% on the object)
        image = _save_png(tmp_path / "f.png", photo, orientation=3)
        binary = (labels == 1).astype(np.uint8)
        return image, _save_png(tmp_path / "m.png", binary * 255, orientation=3), binary[::-1, ::-1]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["palette", "rgba", "labels", "exif"])
def test_predict_reads_palette_alpha_label_and_oriented_masks_as_displayed(kind, tiny_model_dir, tmp_path, capsys):
    from bgprompt_training import cli

    image, mask, expect = _mask_case(kind, tmp_path)
    rc = cli.main(["predict", image, "--mask", mask, "--intrinsics", "100", "100", "79.5", "59.5", "--model",
                   str(tiny_model_dir), "--prompt", "none", "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    n = len(np.unique(expect[expect > 0]))
    assert f"{n} object(s)" in out.out, out.out
    depth = np.load(tmp_path / "out" / "f_depth.npy")
    valid = np.isfinite(depth)
    assert not valid[expect == 0].any()  # nothing off the objects
    for label in np.unique(expect[expect > 0]):
        inner = cv2.erode((expect == label).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        assert valid[inner].mean() > 0.95, (label, valid[inner].mean())  # letterbox blur only at the rims
    if kind == "exif":
        assert "EXIF orientation 3: read as displayed (rotated 180 degrees)" in out.out


def test_exif_orientations_match_pillow_and_both_files_turn_the_same_way(tmp_path):
    """All eight orientations against Pillow's own exif_transpose, for an image and a mask file."""
    from PIL import Image, ImageOps

    from bgprompt_training.image_files import read_image, read_mask

    photo = _photo()
    for orientation in range(1, 9):
        image = _save_png(tmp_path / f"i{orientation}.png", photo, orientation=orientation)
        mask = _save_png(tmp_path / f"m{orientation}.png", _boxes() * 100, orientation=orientation)
        rgb, o1 = read_image(image)
        labels, _, o2 = read_mask(mask)
        assert o1 == o2 == orientation
        assert np.array_equal(rgb, np.asarray(ImageOps.exif_transpose(Image.open(image))))
        assert np.array_equal(labels, np.asarray(ImageOps.exif_transpose(Image.open(mask))))


def test_mask_files_that_are_not_masks_are_refused_by_name(tmp_path):
    from bgprompt_core.frame.masks import InputError
    from bgprompt_training.image_files import read_mask

    photo = _save_png(tmp_path / "photo.png", _photo())
    with pytest.raises(InputError, match="that is a photo, not a mask"):
        read_mask(photo)
    soft = np.zeros((H, W), np.uint8)
    soft[BOX_A] = 255
    soft[BOX_A[0], 19] = 128  # an anti-aliased edge: 255 plus intermediate values is a soft mask, not labels
    mask, how, _ = read_mask(_save_png(tmp_path / "soft.png", soft))
    assert how == "8-bit grey as a soft mask" and mask.dtype == np.float32 and mask.max() == 1.0
    colours = np.zeros((H, W, 3), np.uint8)
    colours[BOX_A], colours[BOX_B] = (200, 30, 30), (30, 200, 30)
    mask, how, _ = read_mask(_save_png(tmp_path / "colours.png", colours))
    assert "distinct colours as instance labels" in how and len(np.unique(mask[mask > 0])) == 2


def test_predict_with_an_exported_graph_and_masks_runs_every_image_and_says_why_there_is_no_preview(tmp_path,
                                                                                                     capsys):
    """`--backend onnxruntime --onnx FILE --mask` (the robot route) failed with "composite previews need the torch
    model" after the first image's files were written; now every image runs and the skipped preview is noted."""
    from bgprompt_training import cli
    from handmade_graphs import write_graph

    graph = write_graph(tmp_path / "g.onnx", hw=(64, 64))
    images = [_save_png(tmp_path / f"f{i}.png", _photo()) for i in range(2)]
    masks = [_save_png(tmp_path / f"m{i}.png", _boxes()) for i in range(2)]
    rc = cli.main(["predict", *images, "--mask", *masks, "--intrinsics", "100", "100", "79.5", "59.5",
                   "--backend", "onnxruntime", "--onnx", str(graph), "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "no {stem}_composite.png previews: the exported graph" in out.out
    for i in range(2):
        depth = np.load(tmp_path / "out" / f"f{i}_depth.npy")
        assert np.isfinite(depth[BOX_A]).mean() > 0.9 and not (tmp_path / "out" / f"f{i}_composite.png").exists()
    # an error at the second image is said to come after the first image's outputs
    cv2.imwrite(str(tmp_path / "m1.png"), np.zeros((H // 2, W), np.uint8))
    rc = cli.main(["predict", *images, "--mask", *masks, "--intrinsics", "100", "100", "79.5", "59.5",
                   "--backend", "onnxruntime", "--onnx", str(graph), "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err
    assert rc == 2 and "outputs of 1 of 2 images were written" in err and "(f0)" in err, err
    assert err.strip().splitlines()[-1].startswith("bgprompt predict: error: mask is 160x60")


def test_predict_without_masks_speaks_the_cli_flags(tmp_path, capsys):
    """The no-mask error said "set segmentation to 'rembg'" (the node's parameter) to a CLI user."""
    from bgprompt_training import cli

    image = _save_png(tmp_path / "f.png", _photo())
    assert cli.main(["predict", image, "--intrinsics", "100", "100", "79.5", "59.5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--mask" in err and "--rembg" in err and "segmentation" not in err, err


# --- an installed (non-editable) layout: every verb finds what it ships ---------------------------------------
REPO = Path(__file__).resolve().parents[2]
_RUN_CLI = """
import contextlib, io, json, sys
from bgprompt_training.cli import main
results = []
for argv in json.loads(sys.argv[1]):  # one process for all the verbs: torch is imported once
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # --help
            rc = exc.code
    results.append((rc, out.getvalue(), err.getvalue()))
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel from a copy of this tree and installed with --target: no source tree on the
    path, the same files a colcon install or `pip install .` lays out."""
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".cache", ".git", "build", "install", "log",
                                                             "demo", "__pycache__", "*.egg-info", ".pytest_cache"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "wheel"), str(src)],
                   check=True, capture_output=True, timeout=300)
    subprocess.run(pip + ["install", "--no-deps", "--no-index", "--target", str(root / "site"),
                          *map(str, (root / "wheel").glob("*.whl"))], check=True, capture_output=True, timeout=300)
    return root / "site"


def _installed_cli(site, *runs: list[str]) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each `bgprompt` run, all in one process with only the install on its path."""
    proc = subprocess.run([sys.executable, "-c", _RUN_CLI, json.dumps(list(runs))], capture_output=True, text=True,
                          timeout=600, cwd=site.parent, env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_verbs_run_from_an_installed_layout(installed, tmp_path):
    """From a colcon install `pretrain` failed: configs/mini.json was not installed (the default pointed into the
    source tree). Every verb's help, pretrain's config lookup and the shipped model + prompts, from the install."""
    img = np.full((96, 128, 3), 230, np.uint8)
    img[30:70, 40:90] = (60, 90, 150)
    cv2.imwrite(str(tmp_path / "f.png"), img)
    cv2.imwrite(str(tmp_path / "m.png"), ((img[..., 0] < 100) * 255).astype(np.uint8))
    shipped = installed / "bgprompt_core" / "prompts" / "mini-1bg.safetensors"
    missing = str(tmp_path / "no-scenes")
    models, pretrain_help, pretrain, info, predict, *helps = _installed_cli(
        installed, ["models", "mini", "--json"], ["pretrain", "--help"],
        ["pretrain", "--data", missing, "--val", missing, "--out", str(tmp_path / "net"), "--steps", "1"],
        ["prompt-info", str(shipped)],
        ["predict", str(tmp_path / "f.png"), "--mask", str(tmp_path / "m.png"), "--intrinsics", "100", "100", "63.5",
         "47.5", "--out", str(tmp_path / "out")],
        *[[verb, "--help"] for verb in _verbs()])
    # sources are recorded in main's portable form; the model itself is package data of the install
    assert models[0] == 0 and json.loads(models[1])[0]["source"] == "package:models/mini", models
    assert (installed / "bgprompt_core" / "models" / "mini" / "config.json").is_file()
    assert [rc for rc, _, _ in helps] == [0] * len(_verbs()) and all("usage: bgprompt" in o for _, o, _ in helps)
    # a real run of the lookup: the default config is read and its network built; then the missing data is named
    assert pretrain[0] == 2 and "no-scenes" in pretrain[2] and "mini.json" not in pretrain[2], pretrain
    config = installed / "bgprompt_training" / "configs" / "mini.json"
    assert config.is_file() and str(config.parent) in "".join(pretrain_help[1].split())  # argparse wraps lines
    assert info[0] == 0 and json.loads(info[1])["network"]["name"] == "mini", info
    assert predict[0] == 0 and "1 object(s)" in predict[1], predict  # the shipped mini and its 1-BG prompt


def test_moved_training_modules_keep_their_old_paths():
    """Issue 30: grasp_eval is the package grasp now (its old path imports it, warning with the new name); train and
    cli became packages under their old names, with the entry point bgprompt_training.cli:main."""
    import importlib

    import bgprompt_training.grasp as grasp

    sys.modules.pop("bgprompt_training.grasp_eval", None)
    with pytest.warns(DeprecationWarning, match="moved to bgprompt_training.grasp"):
        old = importlib.import_module("bgprompt_training.grasp_eval")
    assert old is grasp and old.evaluate_grasp is grasp.evaluate.evaluate_grasp
    from bgprompt_training.cli import main  # noqa: F401  (setup.py's console script)
    from bgprompt_training.train import TrainConfig, Trainer, val_items  # noqa: F401
