"""Depth-network adapters: the six transformers families built tiny from config, frozen, prompt-only gradients,
and each through prompt training, ONNX export and onnxruntime."""
import json

import pytest
import torch

from bgprompt_core.errors import ModelLoadError
from bgprompt_core.networks.loading import build_depth_net, load_depth_net, resolve_spec, spec_from_configs
from bgprompt_core.networks.spec import REGISTRY, DepthNetSpec
from bgprompt_core.method.config import FourierPromptConfig
from bgprompt_core.method.model import PromptedDepth
from tiny_models import FAMILIES, small_config
from bgprompt_core.method.prompts import FourierPrompt


@pytest.mark.parametrize("family", FAMILIES)
def test_family_forward_and_gradients_reach_the_prompt_only(family):
    torch.manual_seed(0)
    cfg, spec, (h, w) = small_config(family)
    net = build_depth_net(cfg, spec)
    assert not any(p.requires_grad for p in net.parameters())
    prompt = FourierPrompt(FourierPromptConfig(height=h, width=w))
    model = PromptedDepth(net, prompt)
    model.train()  # a parent switching to train mode must not un-freeze the network
    assert not net.model.training
    image, mask = torch.rand(2, 3, h, w), torch.zeros(2, 1, h, w)
    mask[..., h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    out = model(image, mask)
    assert out["depth"].shape == (2, h, w) and torch.isfinite(out["depth"]).all()
    out["depth"][mask[:, 0] > 0].mean().backward()
    assert prompt.spectrum.grad is not None and prompt.spectrum.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    if spec.output_kind == "relative_disparity":  # Eq. 2 range
        assert out["depth"].min() >= 1 - 1e-5 and out["depth"].max() <= 20 + 1e-4


def test_input_size_rules():
    _, spec, _ = small_config("dpt")
    with pytest.raises(ValueError, match="square"):
        spec.check_input_size(64, 96)
    with pytest.raises(ValueError, match="multiples of 16"):
        spec.check_input_size(60, 60)
    with pytest.raises(ValueError, match="only 384x384"):
        REGISTRY["dpt-hybrid"].check_input_size(320, 320)


def test_save_and_load_local_directory_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    cfg, spec, (h, w) = small_config("depth_anything")
    net = build_depth_net(cfg, spec)
    net.model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "do_normalize": True,
         "size": {"height": 56, "width": 56}, "ensure_multiple_of": 14}))
    loaded = load_depth_net(str(tmp_path), local_only=True)
    assert loaded.spec.family == "depth_anything" and loaded.spec.output_kind == "relative_disparity"
    assert loaded.spec.mean == (0.485, 0.456, 0.406) and loaded.spec.size_multiple == 14
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(1, 3, h, w)
    assert torch.equal(loaded(x), net(x))


def test_spec_inference_from_hub_style_configs():
    dpt = spec_from_configs("dpt", "Intel/dpt-large", {"model_type": "dpt", "image_size": 384},
                            {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": {"height": 384, "width": 384}})
    assert dpt.square and dpt.output_kind == "relative_disparity" and dpt.mean == (0.5, 0.5, 0.5)
    hybrid = spec_from_configs("h", "x", {"model_type": "dpt", "is_hybrid": True, "image_size": 384}, None)
    assert hybrid.fixed_size
    glpn = spec_from_configs("g", "x", {"model_type": "glpn"}, {"do_normalize": False, "size_divisor": 32})
    assert glpn.output_kind == "metric_depth" and glpn.mean == (0, 0, 0) and glpn.size_multiple == 32
    metric_da = spec_from_configs("m", "x", {"model_type": "depth_anything", "depth_estimation_type": "metric",
                                             "patch_size": 14}, None)
    assert metric_da.output_kind == "metric_depth" and metric_da.input_size[0] % 14 == 0


def test_missing_model_errors_are_actionable(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        resolve_spec(str(tmp_path), local_only=True)
    with pytest.raises(ModelLoadError):
        load_depth_net("nobody/not-a-depth-model", local_only=True)


def test_registry_specs_roundtrip():
    for spec in REGISTRY.values():
        assert DepthNetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.gpu
def test_prompted_depth_on_cuda_matches_cpu():
    torch.manual_seed(2)
    cfg, spec, (h, w) = small_config("dpt")
    net = build_depth_net(cfg, spec)
    model = PromptedDepth(net, FourierPrompt(FourierPromptConfig(height=h, width=w)))
    image, mask = torch.rand(1, 3, h, w), torch.ones(1, 1, h, w)
    mask[..., :8, :] = 0
    cpu = model(image, mask)["depth"]
    gpu = model.cuda()(image.cuda(), mask.cuda())["depth"].cpu()
    assert torch.allclose(cpu, gpu, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_a_prompt_exports_it_and_onnxruntime_agrees(family, tmp_path):
    """The deployment path for each architecture of the registry: 2 steps of prompt training through the frozen
    network (si-RMSE, Eq. 3) that lower the loss, ONNX export with the prompt, and onnxruntime equal to torch within
    a tolerance taken from the output's own scale."""
    import numpy as np
    import onnxruntime as ort

    from bgprompt_core.runtime.export import export_onnx
    from bgprompt_core.method.metrics import si_rmse

    torch.manual_seed(0)
    cfg, spec, _ = small_config(family)
    if family == "zoedepth":  # a tiny random head's softplus bin centres are all ln 2: depth is constant whatever
        cfg.bin_centers_type = "normed"  # the input, so no prompt can lower a loss; ZoeDepth's other bin variant
    net = build_depth_net(cfg, spec)
    size = spec.input_size[0]
    if spec.output_kind == "relative_disparity":  # condition a random disparity head for Eq. 2 (see test_estimator)
        last = [m for m in net.model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        with torch.no_grad():
            last.weight.mul_(1e4)
            last.bias.fill_(1.0)
    if family == "zoedepth":
        with torch.no_grad():
            net.model.metric_head.conv2.weight.mul_(100)  # bins that vary over the image
    prompt = FourierPrompt(FourierPromptConfig(height=size, width=size))
    model = PromptedDepth(net, prompt)
    opt = torch.optim.Adam(prompt.parameters(), lr=0.05)
    image, mask = torch.rand(2, 3, size, size), torch.zeros(2, 1, size, size)
    mask[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    gt = 1.0 + torch.rand(2, size, size)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    losses = []
    for _ in range(2):
        opt.zero_grad()
        loss = si_rmse(model(image, mask)["depth"], gt, mask[:, 0]).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    with torch.no_grad():
        losses.append(float(si_rmse(model(image, mask)["depth"], gt, mask[:, 0]).mean()))
    assert losses[-1] < losses[0], losses  # the prompt learned: its loss fell
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())  # the network did not
    path = export_onnx(model.eval(), tmp_path / f"{family}.onnx", size, max_batch=2)
    with torch.no_grad():
        ref = model(image, mask)["depth"].numpy()
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["depth"], {"image": image.numpy(), "mask": mask.numpy()})[0]
    assert out.shape == ref.shape and np.isfinite(out).all()
    # float32 runtimes differ by ~1e-7 relative per operation, accumulated over the network: 1e-5 of the output's
    # scale absolute (DepthPro's ReLU head gives 0..248, so differences of 4e-4 sit where the depth is ~0), plus
    # 2e-3 relative where Eq. 2's division amplifies them
    scale = float(np.abs(ref).max())
    assert np.allclose(out, ref, rtol=2e-3, atol=1e-5 * scale), (float(np.abs(out - ref).max()), scale)


def _conditioned_model():
    torch.manual_seed(0)
    cfg, spec, _ = small_config("depth_anything")
    net = build_depth_net(cfg, spec)
    last = [m for m in net.model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():  # a random disparity head conditioned for Eq. 2 (see test_estimator)
        last.weight.mul_(1e4)
        last.bias.fill_(1.0)
    return PromptedDepth(net, None)


def test_the_torch_fp16_path_runs_the_network_in_fp16_and_eq2_in_fp32(caplog):
    """TorchBackend's fp16 path (autocast; taken on CUDA, exercised here with CPU autocast): the network in fp16, Eq. 2
    in fp32 as in the exported fp16 graph (it ran in fp16 before: 3 digits of the min/max normalisation lost).
    fp16 asked on a CPU device warns and runs fp32."""
    import logging

    import numpy as np

    from bgprompt_core.method.depth_transform import disparity_to_depth
    from bgprompt_core.runtime.torch_backend import TorchBackend

    model = _conditioned_model()
    x = torch.rand(2, 3, 56, 56)
    m = torch.zeros(2, 1, 56, 56)
    m[..., 10:40, 12:44] = 1
    fp32 = TorchBackend(model, "cpu", "fp32").run(x.numpy(), m.numpy())
    with caplog.at_level(logging.WARNING, logger="bgprompt.backend"):
        asked = TorchBackend(model, "cpu", "fp16")
    assert not asked.fp16 and "running fp32" in caplog.text
    assert np.array_equal(asked.run(x.numpy(), m.numpy()), fp32)
    asked.fp16 = True  # the GPU path
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out = model(x, m)
    assert out["raw"].dtype == torch.float16 and out["depth"].dtype == torch.float32
    assert torch.equal(out["depth"], disparity_to_depth(out["raw"].float()))  # Eq. 2 on the fp16 output, in fp32
    half = asked.run(x.numpy(), m.numpy())
    assert half.dtype == np.float32 and np.array_equal(half, out["depth"].numpy()) and not np.array_equal(half, fp32)
    assert half.min() >= 1.0 and half.max() <= 20.0


@pytest.mark.gpu
def test_the_torch_fp16_path_on_cuda_stays_finite_and_near_fp32():
    import numpy as np

    from bgprompt_core.runtime.torch_backend import TorchBackend

    model = _conditioned_model()
    x, m = np.random.rand(2, 3, 56, 56).astype(np.float32), np.ones((2, 1, 56, 56), np.float32)
    fp32 = TorchBackend(model, "cuda", "fp32").run(x, m)
    half = TorchBackend(model, "cuda", "fp16").run(x, m)
    assert np.isfinite(half).all() and np.median(np.abs(half - fp32) / fp32) < 0.05
