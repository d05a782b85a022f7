"""Eq. 1 compositing and Eq. 2 output transform."""
import pytest
import torch

from bgprompt_core.method.composite import composite
from bgprompt_core.method.config import DepthTransformConfig
from bgprompt_core.method.depth_transform import disparity_to_depth, output_to_depth
from bgprompt_core.networks.spec import IMAGENET_MEAN, IMAGENET_STD
from bgprompt_core.networks.normalization import Normalization

PHI = Normalization(IMAGENET_MEAN, IMAGENET_STD)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    img, bg = torch.rand(2, 3, 16, 20, generator=g), torch.rand(2, 3, 16, 20, generator=g)
    mask = (torch.rand(2, 1, 16, 20, generator=g) > 0.5).float()
    return img, bg, mask


def test_composite_object_pixels_bit_identical_and_background_is_phi_of_prompt():
    img, bg, mask = _inputs()
    c = composite(img, mask, bg, PHI)
    m = mask.bool().expand_as(c)
    assert torch.equal(c[m], PHI(img)[m])
    assert torch.equal(c[~m], PHI(bg)[~m])
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(PHI(img), (img - mean) / std)


def test_soft_mask_blends_linearly():
    img, bg, _ = _inputs(1)
    mask = torch.full((2, 1, 16, 20), 0.25)
    c = composite(img, mask, bg, PHI)
    assert torch.allclose(c, 0.25 * PHI(img) + 0.75 * PHI(bg), atol=1e-6)


def test_additive_perturbs_every_pixel_around_zero():
    img, _, mask = _inputs(2)
    assert torch.allclose(composite(img, mask, torch.full_like(img, 0.5), PHI, "additive"), PHI(img))
    bg = torch.full_like(img, 0.7)
    c = composite(img, mask, bg, PHI, "additive")
    assert torch.allclose(c - PHI(img), (0.2 / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1).expand_as(c), atol=1e-6)


def test_composite_size_mismatch_and_unknown_mode():
    img, bg, mask = _inputs()
    with pytest.raises(ValueError, match="share H x W"):
        composite(img, mask[..., :10], bg, PHI)
    with pytest.raises(ValueError, match="replace"):
        composite(img, mask, bg, PHI, "multiply")


def test_eq2_endpoints_and_interior():
    disp = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    depth = disparity_to_depth(disp)
    assert depth[0, 1, 1].item() == pytest.approx(1.0)  # largest disparity -> depth 1
    assert depth[0, 0, 0].item() == pytest.approx(20.0)  # smallest -> 1 / 0.05
    assert depth[0, 1, 0].item() == pytest.approx(2.0)  # (2 - 0) / 4 = 0.5 -> 2
    assert depth[0, 0, 1].item() == pytest.approx(4.0)  # 0.25 -> 4
    assert disparity_to_depth(disp, cfg=DepthTransformConfig(floor=0.5))[0, 0, 1].item() == pytest.approx(2.0)


def test_eq2_object_range_uses_only_object_pixels():
    disp = torch.tensor([[[100.0, 1.0], [2.0, 3.0]]])
    mask = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    whole = disparity_to_depth(disp, mask, DepthTransformConfig(range="image"))
    obj = disparity_to_depth(disp, mask, DepthTransformConfig(range="object"))
    assert obj[0, 1, 1].item() == pytest.approx(1.0) and obj[0, 0, 1].item() == pytest.approx(20.0)
    assert obj[0, 1, 0].item() == pytest.approx(2.0)
    assert whole[0, 1, 1].item() == pytest.approx(1 / 0.05)  # (3-1)/99 < 0.05 -> floored
    with pytest.raises(ValueError, match="non-empty mask"):
        disparity_to_depth(disp, torch.zeros_like(mask), DepthTransformConfig(range="object"))


def test_output_to_depth_identity_for_depth_networks():
    raw = torch.rand(1, 4, 4) + 1
    assert torch.equal(output_to_depth(raw, "metric_depth"), raw)
    with pytest.raises(ValueError, match="unknown output kind"):
        output_to_depth(raw, "normals")
