"""Prompt parameterizations: the 1/f Fourier prompt, the pixel ablation, PNet."""
import numpy as np
import pytest
import torch

from bgprompt_core.method.config import ConfigError, FourierPromptConfig, PixelPromptConfig, PromptNetConfig
from bgprompt_core.method.prompts import FourierPrompt, PixelPrompt, PromptNet, build_prompt, fourier_scale


def test_fourier_scale_closed_form():
    s = fourier_scale(384, 384).numpy()
    assert s.shape == (384, 193)
    assert s[0, 0] == pytest.approx(384.0)  # DC clamps at 1 / max(H, W)
    assert s.min() == pytest.approx(1 / np.sqrt(0.5**2 + 0.5**2), rel=1e-5)  # ~1.41 at the corner
    assert s[0, 5] == pytest.approx(384 / 5, rel=1e-5)  # f = 5 / 384 along x
    assert fourier_scale(32, 48, decay=2.0)[3, 0].item() == pytest.approx((32 / 3) ** 2, rel=1e-5)


def test_fourier_prompt_is_the_irfft_of_the_scaled_spectrum():
    torch.manual_seed(0)
    p = FourierPrompt(FourierPromptConfig(height=64, width=64))
    logits = p.logits().detach()[0].double()
    spec = torch.fft.rfft2(logits * 0.2, norm="ortho")
    expect = torch.view_as_complex((p.scale[..., None] * p.spectrum[0]).double().contiguous())
    # columns 1..W/2-1 are free of Hermitian constraints: recovered exactly
    assert torch.allclose(spec[..., 1:32], expect[..., 1:32], rtol=1e-4, atol=1e-5)


def test_fourier_prompt_follows_one_over_f_at_init():
    torch.manual_seed(1)
    p = FourierPrompt(FourierPromptConfig(height=128, width=128))
    amp = torch.fft.rfft2(p.logits().detach()[0], norm="ortho").abs().mean(0).numpy()
    fy = np.fft.fftfreq(128)[:, None]
    fx = np.fft.rfftfreq(128)[None, :]
    f = np.sqrt(fy**2 + fx**2)
    sel = (f > 0.02) & (f < 0.4)
    slope = np.polyfit(np.log(f[sel]), np.log(amp[sel]), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)


def test_fourier_prompt_at_384_spans_reference_range():
    torch.manual_seed(2)
    img = FourierPrompt(FourierPromptConfig()).image()
    assert img.shape == (1, 3, 384, 384)
    lo, hi = img.min().item(), img.max().item()
    assert 0.03 < lo < 0.3 and 0.7 < hi < 0.97  # reference: roughly [0.14, 0.88]


def test_prompts_give_backgrounds_in_unit_range_at_any_size():
    mask = torch.zeros(3, 1, 40, 50)
    for cfg in (FourierPromptConfig(height=32, width=32), PixelPromptConfig(height=32, width=32),
                PromptNetConfig(height=32, width=32, num_downs=3, base_channels=4)):
        bg = build_prompt(cfg)(mask)
        assert bg.shape == (3, 3, 40, 50)
        assert bg.min() >= 0 and bg.max() <= 1


def test_pixel_prompt_gaussian_init():
    torch.manual_seed(3)
    p = PixelPrompt(PixelPromptConfig(height=100, width=100, init_std=1.0))
    assert p.pixels.std().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(p.image(), torch.sigmoid(p.pixels))


def _conv_params(cin, cout, k=4):
    return k * k * cin * cout + cout


def test_pnet_paper_size_matches_pix2pix_unet128():
    net = PromptNet(PromptNetConfig(bias=False))
    ngf = 64
    c = [ngf, 2 * ngf, 4 * ngf] + [8 * ngf] * 4
    down = _conv_params(2, c[0]) + sum(_conv_params(c[i - 1], c[i]) for i in range(1, 7))
    up = _conv_params(c[6], c[5]) + sum(_conv_params(2 * c[i], c[i - 1]) for i in range(1, 6)) + _conv_params(2 * c[0], 6)
    n = sum(p.numel() for p in net.parameters())
    assert n == down + up
    assert n == pytest.approx(41.8e6, rel=0.01)


def test_pnet_depends_on_the_mask_and_bias_averages_a_fourier_prompt():
    torch.manual_seed(4)
    cfg = PromptNetConfig(height=32, width=32, num_downs=3, base_channels=8)
    net = PromptNet(cfg)
    for p in net.unet.parameters():
        torch.nn.init.normal_(p, std=0.1)
    a, b = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    a[..., 8:24, 8:24] = 1
    b[..., 2:12, 20:30] = 1
    ya, yb = net(a), net(b)
    assert (ya - yb).abs().max() > 1e-3
    # without bias: pure sigmoid(gain * irfft(unet(...))); with bias: the mean of that and the 1-BG image
    nobias = PromptNet(PromptNetConfig(height=32, width=32, num_downs=3, base_channels=8, bias=False))
    nobias.unet.load_state_dict(net.unet.state_dict())
    assert torch.allclose(ya, 0.5 * (nobias(a) + net.bias.image()), atol=1e-6)


def test_residual_pnet_starts_at_its_bias_and_adds_logits():
    torch.manual_seed(5)
    cfg = PromptNetConfig(height=32, width=32, num_downs=3, base_channels=8, combine="residual")
    net = PromptNet(cfg)
    a, b = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    a[..., 8:24, 8:24] = 1
    b[..., 2:12, 20:30] = 1
    # at init the last U-Net layer is zero: every mask gets exactly the bias (e.g. a trained 1-BG prompt)
    assert torch.equal(net(a), net.bias.image()) and torch.equal(net(b), net.bias.image())
    for p in net.unet.parameters():
        torch.nn.init.normal_(p, std=0.1)
    nobias = PromptNet(PromptNetConfig(height=32, width=32, num_downs=3, base_channels=8, bias=False))
    nobias.unet.load_state_dict(net.unet.state_dict())
    u = torch.logit(nobias(a).double().clamp(1e-12, 1 - 1e-12))  # gain * irfft(unet(mask))
    expected = torch.sigmoid(u + net.bias.logits().double())
    ok = nobias(a).double().sub(0.5).abs() < 0.49  # away from float saturation, where logit() is exact enough
    assert ok.float().mean() > 0.5 and torch.allclose(net(a).double()[ok], expected[ok], atol=1e-4)
    export = PromptNet(cfg)
    export.load_state_dict(net.state_dict())
    assert torch.allclose(export.for_export()(a), net(a), atol=1e-4)  # matrix DFTs + baked bias logits
    with pytest.raises(ValueError, match="residual"):
        PromptNetConfig(bias=False, combine="residual")


def test_pnet_ablations_change_the_structure():
    base = PromptNet(PromptNetConfig(height=32, width=32, num_downs=3, base_channels=4))
    img = PromptNet(PromptNetConfig(height=32, width=32, num_downs=3, base_channels=4, input="image"))
    pix = PromptNet(PromptNetConfig(height=32, width=32, num_downs=3, base_channels=4, space="pixel"))
    nob = PromptNet(PromptNetConfig(height=32, width=32, num_downs=3, base_channels=4, bias=False))
    assert base.unet.down[0].in_channels == 2 and base.unet.up[0][1].out_channels == 6
    assert img.unet.down[0].in_channels == 6
    assert pix.unet.down[0].in_channels == 1 and pix.unet.up[0][1].out_channels == 3
    assert nob.bias is None and base.bias is not None
    with pytest.raises(ValueError, match="needs the object image"):
        img(torch.ones(1, 1, 32, 32))


@pytest.mark.parametrize("kwargs", [dict(height=0), dict(divisor=-1.0), dict(decay=float("nan"))])
def test_invalid_configs_rejected(kwargs):
    with pytest.raises(ConfigError):
        FourierPromptConfig(**kwargs)


def test_invalid_pnet_choice_rejected():
    with pytest.raises(ConfigError, match="input"):
        PromptNetConfig(input="depth")
