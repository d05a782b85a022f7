"""Test configuration: markers, loopback-only ROS environment, GPU skipping."""
from __future__ import annotations

import os
import tempfile

import pytest

# Safety rule: DDS discovery never leaves loopback, whatever starts rclpy under this test run.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="bgprompt-roslog-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# rembg imports pymatting, whose ~60 numba functions compile at import: 52 s on a fresh venv (CI), for alpha
# matting that bgprompt never calls (segmentation.py runs the rembg session only). Interpreted here, in every
# process the tests start; a robot compiles them once, on the first rembg start (numba caches them).
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")


def _gpu_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    return None


def pytest_collection_modifyitems(config, items):
    # the install tests first, as in the flat layout they were written under: run after test/ros in the same
    # process, the robot-venv node's lifecycle service stays 'unreachable' to their client (cause not found yet)
    items.sort(key=lambda item: item.path.name != "test_install.py")
    reason = _gpu_reason()
    if reason:
        skip = pytest.mark.skip(reason=f"gpu test skipped: {reason}")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Depth Anything (random weights) saved in Hugging Face layout, 56x56 input."""
    import json

    import torch

    from bgprompt_core.networks.loading import build_depth_net
    from tiny_models import small_config

    root = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    cfg, spec, _ = small_config("depth_anything")
    build_depth_net(cfg, spec).model.save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "size": {"height": 56, "width": 56}}))
    return root


@pytest.fixture(scope="session")
def renders(tmp_path_factory):
    """Six 64 x 64 renders (numpy rasterizer, seed 3): the bag tests' source data."""
    from bgprompt_training.render.generate import RenderConfig
    from bgprompt_training.render.store import render_dataset

    root = tmp_path_factory.mktemp("renders")
    render_dataset(RenderConfig(size=64, seed=3), root, 6, backend="numpy", progress=False)
    return root
