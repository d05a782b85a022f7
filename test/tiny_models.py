"""Tests only: small transformers configs of production depth architectures, built offline in ~0.1 s.

Random weights, the same classes as the hub models; the embedded default network is a trained member of one of
these families.
"""
from __future__ import annotations

from typing import Any

from bgprompt_core.networks.spec import IMAGENET_MEAN, IMAGENET_STD, DepthNetSpec

FAMILIES = ("dpt", "dpt_hybrid", "depth_anything", "glpn", "zoedepth", "depth_pro")


def small_config(family: str, width: int = 32, layers: int = 4) -> tuple[Any, DepthNetSpec, tuple[int, int]]:
    """(transformers config, spec, a valid input size) for a tiny network of ``family``."""
    from transformers import (BeitConfig, BitConfig, DepthAnythingConfig, DepthProConfig, Dinov2Config, DPTConfig,
                              GLPNConfig, ZoeDepthConfig)

    neck = [width // 2, width, width, width]
    if family == "dpt":
        cfg = DPTConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * width, image_size=64, patch_size=16,
                        backbone_out_indices=list(range(layers))[-4:], neck_hidden_sizes=neck,
                        fusion_hidden_size=width // 2, reassemble_factors=[4, 2, 1, 0.5])
        return cfg, DepthNetSpec("tiny-dpt", "", "dpt", (64, 64), 16, square=True), (64, 64)
    if family == "dpt_hybrid":
        bit = BitConfig(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], hidden_sizes=[16, 32, 64],
                        embedding_size=16, num_groups=8, out_features=["stage1", "stage2", "stage3"])
        cfg = DPTConfig(is_hybrid=True, backbone_config=bit, hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * width, image_size=64, patch_size=16,
                        backbone_featmap_shape=[1, 64, 4, 4], neck_hidden_sizes=[16, 32, width, width],
                        fusion_hidden_size=width // 2, reassemble_factors=[1, 1, 1, 0.5], readout_type="project",
                        backbone_out_indices=[0, 1, layers - 2, layers - 1])
        return cfg, DepthNetSpec("tiny-dpt-hybrid", "", "dpt", (64, 64), 16, fixed_size=True), (64, 64)
    if family == "depth_anything":
        backbone = Dinov2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                                intermediate_size=2 * width, patch_size=14, image_size=56,
                                out_features=[f"stage{i}" for i in range(1, layers + 1)][-4:],
                                reshape_hidden_states=False)
        cfg = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=neck, fusion_hidden_size=width // 2,
                                  head_hidden_size=8, reassemble_hidden_size=width, patch_size=14)
        spec = DepthNetSpec("tiny-depth-anything", "", "depth_anything", (56, 56), 14,
                            mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return cfg, spec, (56, 84)
    if family == "glpn":
        cfg = GLPNConfig(num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
                         hidden_sizes=[8, 16, 32, 64], num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16,
                         mlp_ratios=[2, 2, 2, 2])
        spec = DepthNetSpec("tiny-glpn", "", "glpn", (64, 96), 32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                            output_kind="metric_depth")
        return cfg, spec, (64, 96)
    if family == "zoedepth":  # BEiT backbone, metric bins (one NYU-like bin configuration)
        beit = BeitConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * width,
                          image_size=64, patch_size=16, out_features=[f"stage{i}" for i in range(1, layers + 1)][-4:],
                          use_relative_position_bias=True, reshape_hidden_states=False)
        cfg = ZoeDepthConfig(backbone_config=beit, neck_hidden_sizes=neck, fusion_hidden_size=width // 2,
                             bottleneck_features=width // 2, num_relative_features=8, num_attractors=[4, 2, 2, 1],
                             bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0, "name": "nyu"}],
                             reassemble_factors=[4, 2, 1, 0.5], backbone_hidden_size=width, patch_size=16,
                             readout_type="project")
        spec = DepthNetSpec("tiny-zoedepth", "", "zoedepth", (64, 64), 32, output_kind="metric_depth")
        return cfg, spec, (64, 64)
    if family == "depth_pro":  # fixed input size: the multi-scale patch encoder tiles it
        vit = {"model_type": "dinov2", "hidden_size": width, "num_hidden_layers": 2, "num_attention_heads": 2,
               "intermediate_size": 2 * width, "patch_size": 16, "image_size": 64}
        cfg = DepthProConfig(fusion_hidden_size=width // 2, patch_size=64, intermediate_hook_ids=[1, 0],
                             intermediate_feature_dims=[width // 2, width // 2], scaled_images_ratios=[0.5, 1.0],
                             scaled_images_overlap_ratios=[0.0, 0.25], scaled_images_feature_dims=[width, width],
                             image_model_config=vit, patch_model_config=vit, fov_model_config=vit, use_fov_model=False)
        spec = DepthNetSpec("tiny-depth-pro", "", "depth_pro", (128, 128), 1, fixed_size=True,
                            output_kind="metric_depth")
        return cfg, spec, (128, 128)
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
