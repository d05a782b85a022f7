"""Prompt checkpoints: round trips, refusals, and the importer of the authors' released prompts."""
import json
import pickle

import pytest
import torch
from safetensors import safe_open

from bgprompt_core.networks.spec import REGISTRY
from bgprompt_core.method.checkpoint import (CheckpointError, PromptMeta, import_authors_prompt, load_prompt, read_meta,
                                      save_prompt)
from bgprompt_core.method.config import FourierPromptConfig, PixelPromptConfig, PromptNetConfig
from bgprompt_core.method.prompts import build_prompt, fourier_scale

NET = REGISTRY["dpt-large"]
CONFIGS = [FourierPromptConfig(height=32, width=48), PixelPromptConfig(height=32, width=32),
           PromptNetConfig(height=32, width=32, num_downs=3, base_channels=4)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.kind)
def test_roundtrip_rebuilds_an_identical_prompt(tmp_path, cfg):
    torch.manual_seed(0)
    prompt = build_prompt(cfg)
    meta = PromptMeta(prompt=cfg, network=NET, training={"steps": 3}, metrics={"si_rmse": 0.25})
    path = save_prompt(tmp_path / "p.safetensors", prompt, meta)
    loaded, meta2 = load_prompt(path, NET)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 5:20, 8:30] = 1
    assert torch.equal(loaded(mask), prompt(mask))
    assert meta2.prompt == cfg and meta2.network == NET and meta2.metrics == {"si_rmse": 0.25}
    with safe_open(str(path), framework="pt") as f:  # re-read independently: JSON in the header
        header = json.loads(f.metadata()["bgprompt"])
    assert header["format_version"] == 1 and header["network"]["source"] == "Intel/dpt-large"
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def test_refuses_another_network_with_a_reason(tmp_path):
    cfg = CONFIGS[0]
    path = save_prompt(tmp_path / "p.safetensors", build_prompt(cfg), PromptMeta(prompt=cfg, network=NET))
    with pytest.raises(CheckpointError, match="learned through 'dpt-large'.*normalization differs"):
        load_prompt(path, REGISTRY["depth-anything-v2-small"])
    load_prompt(path, REGISTRY["depth-anything-v2-small"], allow_network_mismatch=True)


def test_refuses_corrupt_truncated_missing_and_foreign_files(tmp_path):
    cfg = CONFIGS[0]
    good = save_prompt(tmp_path / "p.safetensors", build_prompt(cfg), PromptMeta(prompt=cfg, network=NET))
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_prompt(tmp_path / "trunc.safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_prompt(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_prompt(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="without bgprompt metadata"):
        load_prompt(tmp_path / "other.safetensors")


def _rewrite(tmp_path, tensors, meta_dict):
    from safetensors.torch import save_file
    p = tmp_path / "edited.safetensors"
    save_file(tensors, str(p), metadata={"bgprompt": json.dumps(meta_dict)})
    return p


def test_refuses_newer_format_shape_mismatch_and_nan(tmp_path):
    cfg = CONFIGS[0]
    prompt = build_prompt(cfg)
    meta = json.loads(PromptMeta(prompt=cfg, network=NET).to_json())
    tensors = {k: v.contiguous() for k, v in prompt.state_dict().items()}
    with pytest.raises(CheckpointError, match="newer than this bgprompt"):
        read_meta(_rewrite(tmp_path, tensors, {**meta, "format_version": 99}))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_prompt(_rewrite(tmp_path, {"spectrum": torch.zeros(1, 3, 8, 5, 2)}, meta))
    with pytest.raises(CheckpointError, match="NaN"):
        load_prompt(_rewrite(tmp_path, {"spectrum": torch.full_like(tensors["spectrum"], float("nan"))}, meta))


def _authors_file(tmp_path, h=24, decay=1.0, extra=None):
    spectrum = torch.randn(1, 3, h, h // 2 + 1, 2) * 0.01
    scale = fourier_scale(h, h, decay)[None, None, :, :, None]
    state = {"module.optimized_distortion.spectrum_real_imag_t": spectrum,
             "module.optimized_distortion.scale": scale, "module.model.conv.weight": torch.zeros(2, 2)}
    path = tmp_path / "single_background_fft_dpt.pth.tar"
    torch.save({"epoch": 49, "state_dict": state, **(extra or {})}, path)
    return path, spectrum


def test_import_authors_prompt_reproduces_their_background(tmp_path):
    torch.manual_seed(3)
    path, spectrum = _authors_file(tmp_path)
    prompt, meta = import_authors_prompt(path, NET)
    assert meta.prompt.height == 24 and meta.prompt.width == 24 and meta.prompt.decay == pytest.approx(1.0)
    # independent reconstruction of the reference code: sigmoid(irfft2(scale * spec, ortho) / 0.2)
    scale = fourier_scale(24, 24)[..., None]
    ref = torch.sigmoid(torch.fft.irfft2(torch.view_as_complex(scale * spectrum[0]), s=(24, 24), norm="ortho") / 0.2)
    assert torch.allclose(prompt.image()[0], ref, atol=1e-6)


def test_import_reads_decay_from_the_scale(tmp_path):
    path, _ = _authors_file(tmp_path, h=16, decay=1.5)
    _, meta = import_authors_prompt(path, NET)
    assert meta.prompt.decay == pytest.approx(1.5, abs=1e-4)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_import_refuses_pickled_objects_and_non_prompt_files(tmp_path):
    evil = tmp_path / "evil.pth.tar"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        import_authors_prompt(evil, NET)
    hyper = tmp_path / "hypernet_fft_dpt.pth.tar"
    torch.save({"state_dict": {"module.hypernet.model.0.weight": torch.zeros(3)}}, hyper)
    with pytest.raises(CheckpointError, match="only 1-BG checkpoints"):
        import_authors_prompt(hyper, NET)
    with pytest.raises(CheckpointError, match="not found"):
        import_authors_prompt(tmp_path / "nope.pth.tar", NET)


def _crafted(tmp_path, edit):
    """A real 1-BG checkpoint (192x192) whose JSON metadata only was edited by ``edit``."""
    from safetensors.torch import load_file, save_file

    cfg = FourierPromptConfig(height=192, width=192)
    path = save_prompt(tmp_path / "p.safetensors", build_prompt(cfg), PromptMeta(prompt=cfg, network=NET))
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["bgprompt"])
    out = tmp_path / "crafted.safetensors"
    save_file(load_file(str(path)), str(out), metadata={"bgprompt": json.dumps(edit(meta))})
    return out


def test_crafted_metadata_is_refused_before_anything_is_allocated(tmp_path):
    def decay(m):
        m["prompt"]["decay"] = 60
        return m

    with pytest.raises(CheckpointError, match="decay"):  # was: an all-NaN background, no warning
        load_prompt(_crafted(tmp_path, decay), NET)
    with pytest.raises(CheckpointError, match="metadata"):  # was: AttributeError
        load_prompt(_crafted(tmp_path, lambda m: [m]), NET)

    def huge(m):
        m["prompt"]["height"] = m["prompt"]["width"] = 3072
        return m

    path = _crafted(tmp_path, huge)
    # a prompt built from that config would hold 113 MiB of spectrum (and 37 MiB of scale) before the shape check;
    # torch allocates outside tracemalloc's view, so the peak resident memory of a child process is measured
    grown = _peak_rss_growth_mib(path, tmp_path)
    assert grown < 20, f"{grown:.0f} MiB allocated for a {path.stat().st_size // 1024} KiB file"


_RSS_CHILD = """
import sys
from bgprompt_core.method.checkpoint import CheckpointError, load_prompt, read_meta
from bgprompt_core.networks.spec import REGISTRY
from bgprompt_core.method.prompts import build_prompt
def status_mib(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024
load_prompt(sys.argv[2], REGISTRY["dpt-large"])  # warm up every code path on a genuine checkpoint
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident set: the warm-up's
before = status_mib("VmRSS")  # freed memory would otherwise hide up to its own peak of a later allocation
try:
    if sys.argv[3] == "allocate-first":  # the mutant: a loader that builds the prompt before checking shapes
        build_prompt(read_meta(sys.argv[1]).prompt)
    load_prompt(sys.argv[1], REGISTRY["dpt-large"])
except CheckpointError as exc:
    assert "shape" in str(exc), exc
else:
    raise SystemExit("the crafted checkpoint was accepted")
print(status_mib("VmHWM") - before)
"""


def _peak_rss_growth_mib(path, tmp_path, mode: str = "load") -> float:
    """MiB by which loading ``path`` raises a fresh process's peak resident memory (VmHWM, reset first)."""
    import subprocess
    import sys

    cfg = FourierPromptConfig(height=192, width=192)
    good = save_prompt(tmp_path / "good.safetensors", build_prompt(cfg), PromptMeta(prompt=cfg, network=NET))
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), str(good), mode], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout.split()[-1])


def test_the_allocation_probe_sees_torch_allocations(tmp_path):
    """The probe above can fail: a loader that builds the crafted prompt before checking its shapes raises the
    child's peak memory by over 100 MiB (tracemalloc, used before, saw 0.0001 MiB of the same tensors)."""
    def huge(m):
        m["prompt"]["height"] = m["prompt"]["width"] = 3072
        return m

    assert _peak_rss_growth_mib(_crafted(tmp_path, huge), tmp_path, "allocate-first") > 100
