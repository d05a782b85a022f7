"""bgprompt train / eval on tiny configs: learning, frozen network, ablations, exact resume, metrics."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bgprompt_core.networks.loading import build_depth_net, load_depth_net
from bgprompt_core.method.checkpoint import load_prompt
from bgprompt_core.method.config import DepthTransformConfig
from bgprompt_core.method.depth_transform import disparity_to_depth
from proc_lines import wait_for_match
from tiny_models import small_config
from bgprompt_training.eval import evaluate, write_outputs
from bgprompt_core.evaluation.protocol import sample_metrics
from bgprompt_training.render.generate import RenderConfig
from bgprompt_training.render.store import render_dataset
from bgprompt_training.train import TrainConfig, Trainer

BGPROMPT = str(Path(sys.executable).parent / "bgprompt")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    cfg, spec, _ = small_config("depth_anything")
    net = build_depth_net(cfg, spec)
    net.model.save_pretrained(root / "net")
    (root / "net" / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "size": {"height": 56, "width": 56}}))
    render_dataset(RenderConfig(size=56, seed=1, families=("superquadric", "primitive")), root / "train", 48,
                   backend="numpy", progress=False)
    return root


def _cfg(world, **kw):
    base = dict(model=str(world / "net"), data=[str(world / "train")], val=[str(world / "train")], steps=60,
                batch=8, val_every=30, val_samples=24, optimizer="adam", lr=0.05, local_only=True)
    base.update(kw)
    return TrainConfig(**base)


def test_training_lowers_val_loss_beats_white_and_touches_only_the_prompt(world, tmp_path):
    cfg = _cfg(world, out=str(tmp_path / "p.safetensors"))
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    result = trainer.run()
    assert all(torch.equal(before[k], v) for k, v in trainer.net.state_dict().items())  # frozen
    assert not trainer.net.model.training and all(p.grad is None for p in trainer.net.parameters())
    losses = [h["loss"] for h in result["history"]]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    rows = evaluate(str(world / "net"), [str(world / "train")], prompts=[cfg.out], count=24, local_only=True,
                    eq2_variants=False)
    by = {r["condition"]: r for r in rows}
    assert by["1-BG (p)"]["si_rmse"] < 0.7 * by["none (white)"]["si_rmse"]


def test_ablation_flags_change_the_parameterization(world, tmp_path):
    out = str(tmp_path / "x.safetensors")
    assert type(Trainer(_cfg(world, out=out, param="pixel")).prompt).__name__ == "PixelPrompt"
    assert Trainer(_cfg(world, out=out, composite="additive")).model.mode == "additive"
    pn = Trainer(_cfg(world, out=out, prompt="pnet", pnet_downs=3, pnet_channels=4, pnet_input="image")).prompt
    assert pn.unet.down[0].in_channels == 6 and pn.bias is not None
    nb = Trainer(_cfg(world, out=out, prompt="pnet", pnet_downs=3, pnet_channels=4, bias=False)).prompt
    assert nb.unet.down[0].in_channels == 2 and nb.bias is None
    pix = Trainer(_cfg(world, out=out, prompt="pnet", pnet_downs=3, pnet_channels=4, param="pixel")).prompt
    assert pix.cfg.space == "pixel" and pix.unet.up[0][1].out_channels == 3
    ft = Trainer(_cfg(world, out=str(tmp_path / "ft"), prompt="finetune", steps=4, val_every=2, val_samples=8))
    assert ft.prompt is None and all(p.requires_grad for p in ft.net.parameters())
    before = next(ft.net.parameters()).clone()
    ft.run()
    tuned = load_depth_net(str(tmp_path / "ft"), local_only=True)  # a finetuned network is a model directory
    assert not torch.equal(next(tuned.parameters()), before)
    pnet = Trainer(_cfg(world, out=str(tmp_path / "pn.safetensors"), prompt="pnet", pnet_downs=3, pnet_channels=4,
                        steps=4, val_every=2, val_samples=8))
    pnet.run()
    loaded, meta = load_prompt(tmp_path / "pn.safetensors", pnet.net.spec)
    assert meta.prompt.kind == "pnet" and meta.metrics["step"] in (2, 4)


def test_residual_pnet_warm_started_from_a_1bg_prompt_starts_at_it(world, tmp_path):
    single = _cfg(world, out=str(tmp_path / "one.safetensors"), steps=6, val_every=3, val_samples=8)
    Trainer(single).run()
    one, _ = load_prompt(single.out)
    pn = Trainer(_cfg(world, out=str(tmp_path / "pn.safetensors"), prompt="pnet", pnet_downs=3, pnet_channels=4,
                      pnet_combine="residual", init_bias=single.out)).prompt
    masks = torch.zeros(2, 1, 56, 56)
    masks[0, :, 10:40, 10:30], masks[1, :, 5:15, 30:50] = 1, 1
    with torch.no_grad():
        assert torch.allclose(pn(masks), one(masks), atol=1e-6)  # every mask: exactly the trained 1-BG prompt
    pixel = _cfg(world, out=str(tmp_path / "px.safetensors"), param="pixel", steps=2, val_every=2, val_samples=8)
    Trainer(pixel).run()
    with pytest.raises(ValueError, match="1-BG Fourier prompt"):
        Trainer(_cfg(world, out=str(tmp_path / "pn2.safetensors"), prompt="pnet", pnet_downs=3, pnet_channels=4,
                     init_bias=pixel.out))
    with pytest.raises(ValueError, match="--prompt pnet"):
        _cfg(world, init_bias=single.out)


def _train_cmd(world, out, steps, *extra):
    return [BGPROMPT, "train", "--model", str(world / "net"), "--data", str(world / "train"), "--out", str(out),
            "--steps", str(steps), "--val-every", "5", "--optimizer", "adam", "--lr", "0.05", "--local-only", *extra]


def saved_step(state_dir: Path) -> int | None:
    """The step of the state ``LATEST`` names (replaced atomically by the trainer), None before the first save."""
    try:
        name = (state_dir / "LATEST").read_text()
    except FileNotFoundError:
        return None
    return int(name.split("-")[1])


def kill_once_saved(proc: subprocess.Popen, step: int, target=None, deadline: float = 300) -> int:
    """SIGKILL a training run from outside as soon as it says its state of ``step`` (or later) is on disk: the
    line ``state saved: step N`` the trainer prints on stdout (``proc`` runs with ``stdout=PIPE``) after the
    atomic write. ``target()`` picks the process to kill (default: ``proc``). Waits with a deadline; the run must
    still be going when it is killed. Returns the saved step it said."""
    try:
        while True:
            m, _ = wait_for_match(proc.stdout, re.compile(r"^state saved: step (\d+) "), deadline)
            if int(m.group(1)) >= step:
                break
    except AssertionError:
        proc.kill()
        raise
    assert proc.poll() is None, f"the run ended (exit {proc.returncode}) once it saved step {m.group(1)}"
    pid = target() if target else proc.pid
    assert pid is not None, "the process to kill was not found"
    os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=deadline)  # drains the pipe: a launcher reporting its rank's death never blocks
    return int(m.group(1))


def test_killed_run_resumes_exactly(world, tmp_path):
    full, part = tmp_path / "full.safetensors", tmp_path / "part.safetensors"
    steps = 30  # checkpoints every 5 steps; the run is killed from outside once the first one is on disk
    subprocess.run(_train_cmd(world, full, steps), check=True, capture_output=True, timeout=300)
    with open(tmp_path / "killed.err", "wb") as err:
        proc = subprocess.Popen(_train_cmd(world, part, steps), stdout=subprocess.PIPE, stderr=err)
        seen = kill_once_saved(proc, 5)
    assert proc.returncode == -9  # SIGKILL mid-way, before the last step
    latest = saved_step(Path(str(part) + ".state"))
    assert latest in range(5, steps, 5) and latest >= seen  # what it said was saved is on disk (or a later one)
    subprocess.run(_train_cmd(world, part, steps, "--resume"), check=True, capture_output=True, timeout=300)
    h_full = json.loads(next(Path(str(full) + ".state").glob("step-*/state.json")).read_text())["history"]
    h_part = json.loads(next(Path(str(part) + ".state").glob("step-*/state.json")).read_text())["history"]
    assert [h["step"] for h in h_part] == list(range(1, steps + 1))
    assert np.allclose([h["loss"] for h in h_part], [h["loss"] for h in h_full], rtol=1e-5, atol=1e-6)
    a, _ = load_prompt(full)
    b, _ = load_prompt(part)
    assert torch.allclose(a.spectrum, b.spectrum, atol=1e-6)


def _plane_npz(root, n=3, size=32):
    root.mkdir(parents=True, exist_ok=True)
    f = 40.0
    K = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1.0]])
    v, u = np.mgrid[0:size, 0:size].astype(float)
    normals = []
    for i in range(n):
        nrm = np.array([0.2 * (i + 1), -0.1 * i, -1.0])
        nrm /= np.linalg.norm(nrm)
        rays = np.stack([(u - K[0, 2]) / f, (v - K[1, 2]) / f, np.ones_like(u)], -1)
        depth = (nrm @ np.array([0, 0, 1.5 + i])) / (rays @ nrm)
        mask = np.zeros((size, size), bool)
        mask[6:26, 5:27] = True
        rgb = np.full((size, size, 3), 90 + 40 * i, np.uint8)
        np.savez(root / f"plane{i}.npz", rgb=rgb, depth=depth.astype(np.float32), mask=mask, K=K)
        normals.append(nrm)
    return normals


def test_eval_numbers_equal_an_independent_computation(world, tmp_path):
    normals = _plane_npz(tmp_path / "planes", size=56)
    rows = evaluate(str(world / "net"), [f"npz:{tmp_path / 'planes'}"], count=3, local_only=True,
                    figures=tmp_path / "figs", figure_count=2)
    flat = next(r for r in rows if r["condition"] == "flat")
    stds, shapes = [], []
    for i in range(3):
        with np.load(tmp_path / "planes" / f"plane{i}.npz") as f:
            g = f["depth"][f["mask"]].astype(np.float64)
        g5 = g * 5 / g.mean()
        stds.append(g5.std())  # constant prediction, optimal scale -> mean: RMSE = std
        shapes.append((1 / g5).std())  # flat disparity aligned by scale+shift -> its mean
    assert flat["si_rmse"] == pytest.approx(np.mean(stds), rel=1e-4)
    assert flat["shape_err"] == pytest.approx(np.mean(shapes), rel=1e-3)
    assert flat["normal_cos"] == pytest.approx(np.mean([-n[2] for n in normals]), abs=1e-4)  # flat normal (0,0,-1)
    assert flat["skill"] == 0.0 and flat["collapse_fraction"] == 1.0
    table = write_outputs(rows, tmp_path / "out", tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert {"condition", "dataset", "si_rmse", "normal_cos", "count", "shape_err", "skill",
            "collapse_fraction"} <= set(data["rows"][0])
    assert "| flat |" in table and (tmp_path / "out" / "results.csv").read_text().startswith("condition,dataset")
    pngs = sorted((tmp_path / "figs").glob("*.png"))
    assert len(pngs) == 2 and all(cv2.imread(str(p)) is not None for p in pngs)


def test_shape_err_skill_and_collapse_definitions():
    torch.manual_seed(0)
    gt = 1.0 + torch.rand(2, 20, 20)
    mask = torch.ones(2, 20, 20)
    mask[:, :3] = 0
    K = torch.tensor([[30.0, 0, 9.5], [0, 30.0, 9.5], [0, 0, 1]])
    perfect = sample_metrics(gt, gt, mask, K)
    assert perfect["shape_err"].max() < 1e-6 and perfect["si_rmse"].max() < 1e-4
    assert perfect["collapsed"].sum() == 0
    affine = 1.0 / (0.5 / gt + 0.3)  # an affine map of GT disparity with a wrong shift
    m = sample_metrics(affine, gt, mask, K)
    assert m["shape_err"].max() < 1e-5 and m["si_rmse"].min() > 0.05
    # a "cheating" prompt: one extreme disparity in a corner flattens the object through Eq. 2
    raw = 1.0 / gt + 0.0
    raw[:, 0, 0] = 1e4
    cheat = disparity_to_depth(raw, mask, DepthTransformConfig(range="image"))
    assert sample_metrics(cheat, gt, mask, K)["collapsed"].tolist() == [1.0, 1.0]
    honest = disparity_to_depth(raw, mask, DepthTransformConfig(range="object"))
    assert sample_metrics(honest, gt, mask, K)["collapsed"].tolist() == [0.0, 0.0]


def test_results_goal_lines_judge_each_goal():
    from bgprompt_training.results import goal_lines

    def row(d, cond, si, cos=0.8, shape=0.015, collapse=0.0, flat_si=0.5):
        return {"dataset": d, "condition": cond, "si_rmse": si, "normal_cos": cos, "shape_err": shape,
                "collapse_fraction": collapse, "skill": 1 - si / flat_si}

    rows = [row("ind", "flat", 0.5, cos=0.77, shape=0.02, collapse=1.0), row("ind", "none (white)", 1.5, cos=0.7),
            row("ind", "1-BG (mini-1bg)", 0.4, cos=0.86, shape=0.014),  # skill 0.2
            row("ind", "PNet (mini-pnet)", 0.34, cos=0.88, shape=0.012),  # skill 0.32
            row("ood", "flat", 0.5), row("ood", "none (white)", 1.4, cos=0.7, shape=0.016),
            row("ood", "1-BG (mini-1bg)", 0.48, cos=0.83, shape=0.017), row("ood", "PNet (mini-pnet)", 0.42),
            row("ood", "finetune (mini-finetune)", 0.43)]
    lines = goal_lines(rows, {"in": Path("ind"), "out": Path("ood")})

    def met(start: str) -> bool:  # the verdict of the one goal line that starts with ``start``
        found = [line for line in lines if line.split(": ", 1)[1].startswith(start)]
        assert len(found) == 1, (start, lines)
        return found[0].startswith("- met:")

    assert not met("ind: 1-BG skill vs flat +0.20")
    assert met("ind: with PNet") and met("ind: PNet si-RMSE 0.340 vs 1-BG 0.400")
    assert not met("ood: 1-BG shape_err 0.0170 vs white 0.0160")
    assert met("ood: best prompt (PNet) si-RMSE 0.420 vs finetuning 0.430")
    assert sum(line.startswith("- NOT met:") for line in lines) == 2  # exactly the two above


def test_an_interrupted_save_at_the_same_step_keeps_the_last_state_and_saves_are_fsynced(world, tmp_path, monkeypatch):
    """A resume with --init-bias saves step 0 again: a kill during that save must not lose the state LATEST
    names (the old code deleted it first). And what a save writes reaches the disk (fsync) before LATEST moves."""
    import os

    cfg = _cfg(world, out=str(tmp_path / "p.safetensors"), steps=2, val_every=2, val_samples=8)
    tr = Trainer(cfg)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    tr.save_state()
    state = Path(cfg.out + ".state")
    named = state / (state / "LATEST").read_text().strip()
    assert any(p.endswith("state.safetensors") for p in synced) and any(p.endswith("state.json") for p in synced)
    assert any(p == str(state) for p in synced)  # the directory entry of LATEST too
    real_replace = os.replace

    def killed(src, dst):
        if Path(dst).name.startswith("step-"):
            raise KeyboardInterrupt("killed while saving")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        tr.save_state()  # the same step again
    monkeypatch.undo()
    assert (state / (state / "LATEST").read_text().strip()) == named and (named / "state.json").is_file()
    Trainer(cfg).load_state()


def test_oracle_shift_is_the_least_squares_affine_fit_of_disparity_with_the_floor():
    """Closed forms: an affine image of the GT disparity is undone exactly; otherwise the fit is numpy's lstsq of
    [raw, 1] onto 1 / gt on the mask, and fitted disparities below floor * max GT disparity are floored."""
    from bgprompt_core.evaluation.protocol import oracle_shift

    torch.manual_seed(0)
    gt = 1.0 + 4.0 * torch.rand(2, 16, 16)
    mask = torch.zeros(2, 16, 16)
    mask[:, 3:13, 2:14] = 1
    raw = 3.0 / gt - 0.7 + torch.where(mask > 0, 0.0, 50.0)  # affine in disparity on the mask; junk off it
    assert torch.allclose(oracle_shift(raw, gt, mask, floor=0.01)[mask > 0], gt[mask > 0], rtol=1e-4)
    raw = 1.0 / gt + 0.3 * torch.rand(2, 16, 16)  # GT disparity plus noise: the least-squares fit, then the floor
    out = oracle_shift(raw, gt, mask, floor=0.4)
    for i in range(2):
        m = (mask[i] > 0).numpy()
        a = np.stack([raw[i].numpy()[m], np.ones(m.sum())], 1).astype(np.float64)
        (s, t), *_ = np.linalg.lstsq(a, 1.0 / gt[i].numpy()[m].astype(np.float64), rcond=None)
        lo = 0.4 * (1.0 / gt[i].numpy()[m]).max()
        expect = 1.0 / np.maximum(s * raw[i].numpy() + t, lo)
        assert np.allclose(out[i].numpy()[m], expect[m], rtol=1e-4)
        assert np.isclose(out[i].numpy()[m].max(), 1.0 / lo, rtol=1e-5)  # some pixels sit on the floor


def test_the_learning_rate_drops_tenfold_at_its_fraction_of_the_steps(world, tmp_path):
    """The reference schedule: lr for the first 80% of the steps, lr / 10 after; read off the optimizer each step."""
    cfg = _cfg(world, out=str(tmp_path / "p.safetensors"), steps=10, batch=2, val=[], val_every=10, lr=0.05,
               lr_drop_at=0.8)
    trainer = Trainer(cfg)
    seen = []
    step = trainer.opt.step
    trainer.opt.step = lambda *a, **k: (seen.append(trainer.opt.param_groups[0]["lr"]), step(*a, **k))[1]
    trainer.run()
    assert seen == pytest.approx([0.05] * 8 + [0.005] * 2)


def test_the_best_checkpoint_by_a_higher_is_better_metric_is_its_maximum(world, tmp_path, monkeypatch):
    """--select-by normal_cos keeps the validation with the HIGHEST cosine (si_rmse / shape_err: the lowest), and
    the file written is that one's. Validations are scripted so the maximum is neither the first nor the last."""
    from bgprompt_core.method.checkpoint import read_meta

    cfg = _cfg(world, out=str(tmp_path / "p.safetensors"), steps=6, batch=2, val_every=2, val_samples=2,
               select_by="normal_cos")
    trainer = Trainer(cfg)
    scripted = iter([{"si_rmse": 0.2, "normal_cos": 0.5, "shape_err": 0.1, "loss": 0.3},
                     {"si_rmse": 0.4, "normal_cos": 0.9, "shape_err": 0.3, "loss": 0.5},
                     {"si_rmse": 0.1, "normal_cos": 0.7, "shape_err": 0.05, "loss": 0.2}])
    monkeypatch.setattr(trainer, "validate", lambda: dict(next(scripted)))
    result = trainer.run()
    assert result["best"]["step"] == 4 and result["best"]["normal_cos"] == 0.9
    assert read_meta(cfg.out).metrics["normal_cos"] == 0.9  # the saved prompt is the selected one, re-read
