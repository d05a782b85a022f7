"""The embedded default: the shipped `mini` network and its prompts, measured on FRESH held-out objects.

A regression anywhere in the pipeline (renderer, compositing, network loading, Eq. 2, metrics, the
checkpoint) shows up here as the 1-BG prompt no longer beating the white background, or PNet the 1-BG.
"""
import pytest

from bgprompt_core.errors import ModelLoadError
from bgprompt_core.networks.loading import load_depth_net
from bgprompt_core.networks.spec import REGISTRY
from bgprompt_core.method.checkpoint import load_prompt
from bgprompt_core.method.prompts import FourierPrompt, PromptNet
from bgprompt_core.runtime.build import SHIPPED_PROMPTS, resolve_prompt_path
from bgprompt_training.eval import evaluate
from bgprompt_training.render.generate import RenderConfig
from bgprompt_training.render.store import render_dataset


def test_mini_loads_through_the_hub_model_path():
    net = load_depth_net("mini", local_only=True)
    assert type(net.model).__name__ == "DPTForDepthEstimation" and net.spec == REGISTRY["mini"]
    assert sum(p.numel() for p in net.parameters()) < 5_000_000
    prompt, meta = load_prompt(SHIPPED_PROMPTS["mini"]["1bg"], net.spec)
    assert meta.network.name == "mini" and meta.prompt.height == 128


def test_shipped_prompts_resolve_by_name():
    net = load_depth_net("mini", local_only=True)
    kinds = {name: type(load_prompt(resolve_prompt_path(name, net.spec), net.spec)[0])
             for name in ("default", "1bg", "pnet")}
    assert kinds == {"default": FourierPrompt, "1bg": FourierPrompt, "pnet": PromptNet}
    assert resolve_prompt_path("none", net.spec) is None
    assert resolve_prompt_path("./pnet", net.spec).name == "pnet"  # a file of that name stays reachable
    with pytest.raises(ModelLoadError, match="no pnet prompt ships with 'dpt-large'"):
        resolve_prompt_path("pnet", REGISTRY["dpt-large"])


@pytest.mark.slow
def test_shipped_prompt_beats_white_on_fresh_held_out_objects(tmp_path):
    # seed 777 is used by nothing else: objects the prompt never saw, from the training families
    render_dataset(RenderConfig(size=128, seed=777, families=("primitive", "superquadric", "lathe")), tmp_path,
                   48, backend="auto", progress=False)
    shipped = SHIPPED_PROMPTS["mini"]
    rows = evaluate("mini", [str(tmp_path)], prompts=[str(shipped["1bg"]), str(shipped["pnet"])], count=48,
                    local_only=True, eq2_variants=False)
    by = {r["condition"].split(" (")[0]: r for r in rows}
    white, prompt, flat, pnet = by["none"], by["1-BG"], by["flat"], by["PNet"]
    assert prompt["si_rmse"] < 0.5 * white["si_rmse"]
    assert prompt["normal_cos"] > white["normal_cos"] + 0.1
    assert prompt["si_rmse"] < flat["si_rmse"] and prompt["normal_cos"] > flat["normal_cos"]
    assert prompt["collapse_fraction"] <= 0.05
    assert prompt["shape_err"] < white["shape_err"]  # a better shape, not only a better shift
    # the mask-conditioned PNet (started from the 1-BG) must stay better than the 1-BG it starts from
    assert pnet["si_rmse"] < prompt["si_rmse"] and pnet["shape_err"] < prompt["shape_err"]
    assert pnet["collapse_fraction"] <= 0.05
