"""Careless and hostile files given to the CLI verbs: one `error:` line (exit 2) each, never a traceback, and never
metadata trusted over the file it describes."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from bgprompt_core.runtime.graph_contract import GraphError
from bgprompt_training import cli
from handmade_graphs import write_graph


def test_graph_metadata_that_disagrees_with_the_graph_is_refused_when_the_runtime_is_built(tmp_path):
    """A 128x128 graph whose metadata says 8192x8192 (was: accepted, then 2.1 GiB per 160x120 frame before
    onnxruntime refused the input). Both routes check: onnxruntime's session and the ONNX proto (TensorRT)."""
    from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator
    from bgprompt_core.runtime.graph_contract import read_onnx_metadata

    lying = write_graph(tmp_path / "lying.onnx", meta_hw=(8192, 8192))
    cfg = EstimatorConfig(backend="onnxruntime", onnx=str(lying), prompt="none")
    with pytest.raises(GraphError, match="H = 128, the metadata says 8192"):
        ObjectDepthEstimator(cfg)
    with pytest.raises(GraphError, match="W = 128, the metadata says 8192"):
        read_onnx_metadata(lying)
    # the honest graph runs: depth = 1 + channel mean of the letterboxed frame, exactly
    honest = write_graph(tmp_path / "honest.onnx")
    est = ObjectDepthEstimator(EstimatorConfig(backend="onnxruntime", onnx=str(honest), prompt="none"))
    img = np.full((120, 160, 3), 51, np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    mask[30:90, 40:120] = 1
    res = est.estimate(img, np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]]), mask)
    assert res.valid[35:85, 45:115].all() and np.allclose(res.depth[res.valid], 1.2, atol=1e-6)


def test_metadata_sizes_that_are_not_sizes_are_refused(tmp_path):
    import onnx

    from bgprompt_core.runtime.graph_contract import read_onnx_metadata

    path = write_graph(tmp_path / "g.onnx")
    for bad in ([128], [128, "128"], [0, 128], [True, 128]):
        proto = onnx.load(str(path))
        meta = json.loads(proto.metadata_props[0].value)
        meta["input_size"] = bad
        proto.metadata_props[0].value = json.dumps(meta)
        onnx.save(proto, str(tmp_path / "bad.onnx"))
        with pytest.raises(GraphError, match="not two positive integers"):
            read_onnx_metadata(tmp_path / "bad.onnx")


@pytest.fixture(scope="module")
def hostile(tiny_model_dir, tmp_path_factory):
    """Files a careless or hostile user hands the CLI, next to genuine ones."""
    from safetensors.torch import load_file, save_file

    from bgprompt_core.method.checkpoint import PromptMeta, read_meta, save_prompt
    from bgprompt_core.method.config import FourierPromptConfig
    from bgprompt_core.networks.loading import resolve_spec
    from bgprompt_core.method.prompts import build_prompt

    root = tmp_path_factory.mktemp("hostile")
    cfg = FourierPromptConfig(height=56, width=56)
    good = save_prompt(root / "good.safetensors", build_prompt(cfg),
                       PromptMeta(prompt=cfg, network=resolve_spec(str(tiny_model_dir), local_only=True)))
    tensors, meta = load_file(str(good)), json.loads(read_meta(good).to_json())
    save_file(tensors, str(root / "deep.safetensors"), metadata={"bgprompt": "[" * 100000 + "]" * 100000})
    for name, mean in (("mean_str", "abc"), ("mean_letters", ["a", "b", "c"]), ("mean_nan", [0.5, float("nan"), 1])):
        save_file(tensors, str(root / f"{name}.safetensors"),
                  metadata={"bgprompt": json.dumps({**meta, "network": {**meta["network"], "mean": mean}})})
    (root / "corrupt.onnx").write_bytes(b"\x08\x07not a graph" * 40)
    for name, edit in (("bad_config", lambda d: (d / "config.json").write_text("{not json")),
                       ("bad_preproc", lambda d: (d / "preprocessor_config.json").write_text('{"image_mean": 0.5}')),
                       ("truncated", lambda d: (d / "model.safetensors").write_bytes(
                           (d / "model.safetensors").read_bytes()[:4096]))):
        shutil.copytree(tiny_model_dir, root / name)
        edit(root / name)
    from bgprompt_training.render.generate import RenderConfig
    from bgprompt_training.render.store import render_dataset

    render_dataset(RenderConfig(size=56, seed=1, families=("primitive",)), root / "renders", 2, backend="numpy",
                   progress=False)
    shutil.copytree(root / "renders", root / "bad_manifest")
    (root / "bad_manifest" / "manifest.json").write_text('{"format": ')
    shutil.copytree(root / "renders", root / "bad_shard")
    shard = next((root / "bad_shard").glob("*.npz"))
    shard.write_bytes(shard.read_bytes()[:200])
    img = np.full((120, 160, 3), 200, np.uint8)
    cv2.imwrite(str(root / "f.png"), img)
    mask = np.zeros((120, 160), np.uint8)
    mask[30:90, 40:120] = 255
    cv2.imwrite(str(root / "m.png"), mask)
    return root


CASES = {  # verb arguments (MODEL = the tiny model, H = the hostile folder) -> what the one line names
    "checkpoint JSON 100000 levels deep": ("predict --prompt H/deep.safetensors", "nests too deeply"),
    "network.mean 'abc'": ("predict --prompt H/mean_str.safetensors", "network mean must be a list"),
    "network.mean letters": ("predict --prompt H/mean_letters.safetensors", "mean must be 3 finite numbers"),
    "network.mean NaN": ("predict --prompt H/mean_nan.safetensors", "mean must be 3 finite numbers"),
    "corrupt .onnx, onnxruntime": ("predict --backend onnxruntime --onnx H/corrupt.onnx", "onnxruntime cannot load"),
    "prompt-info, deep JSON": ("prompt-info H/deep.safetensors", "nests too deeply"),
    "export, bad mean": ("export --model MODEL --prompt H/mean_letters.safetensors --out H/x.onnx", "finite numbers"),
    "model config.json not JSON": ("predict --model H/bad_config --prompt none", "not a readable JSON file"),
    "preprocessor image_mean 0.5": ("predict --model H/bad_preproc --prompt none", "do not describe a usable"),
    "truncated model weights": ("predict --model H/truncated --prompt none", "cannot load depth network"),
    "models, config.json not JSON": ("models H/bad_config", "not a readable JSON file"),
    "train, manifest not JSON": ("train --model MODEL --data H/bad_manifest --out H/p.safetensors --steps 1",
                                 "not a readable manifest"),
    "train, truncated shard": ("train --model MODEL --data H/bad_shard --out H/p.safetensors --steps 1 --batch 1",
                               "unreadable shard"),
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_files_give_one_error_line_in_every_verb(case, hostile, tiny_model_dir, capsys):
    """Each was a traceback before (RecursionError, ValueError, onnxruntime's InvalidProtobuf, JSONDecodeError,
    TypeError, SafetensorError); now exit 2 with `bgprompt VERB: error: ...` naming the fault."""
    args, expect = CASES[case]
    argv = args.replace("H/", f"{hostile}/").replace("MODEL", str(tiny_model_dir)).split()
    if argv[0] == "predict":
        argv += [f"{hostile}/f.png", "--mask", f"{hostile}/m.png", "--intrinsics", "100", "100", "79.5", "59.5",
                 "--out", f"{hostile}/out"]
        if "--model" not in argv:
            argv += ["--model", str(tiny_model_dir)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # before it: at most transformers' weight-loading progress bar
    assert last.startswith(f"bgprompt {argv[0]}: error:") and expect in last and "Traceback" not in err, err
