"""``bgprompt <verb>``: the one command-line entry point of the project.

Each verb lives in a small function below; heavy imports happen inside the verb so that
``bgprompt --help`` is instant.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from bgprompt_core.runtime.graph_contract import DEFAULT_OPSET
from bgprompt_core.method.config import ConfigError

# configs shipped as package data (setup.py): found in a source checkout, a wheel and a colcon install alike
PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"
DESCRIPTION = """\
Object depth from one image with a learned background prompt and a frozen depth network
(Baradad et al., "Background Prompting for Improved Object Depth").

Run `bgprompt VERB --help` for the options of each verb."""


def _cmd_models(args: argparse.Namespace) -> int:
    from bgprompt_core.networks.loading import REGISTRY, resolve_spec

    specs = [resolve_spec(args.model, local_only=True)] if args.model else list(REGISTRY.values())
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=2))
        return 0
    print(f"{'name':24} {'family':15} {'input':>9} {'x':>3} {'output':19} source")
    for s in specs:
        rule = "fixed" if s.fixed_size else ("sq" if s.square else "")
        print(f"{s.name:24} {s.family:15} {s.input_size[0]:>4}x{s.input_size[1]:<4} {s.size_multiple:>3} "
              f"{s.output_kind:19} {s.source} {rule}")
    return 0


def register_models(sub) -> None:
    p = sub.add_parser("models", help="list the depth networks bgprompt knows (registry) and their specs",
                       description="List registry names with input-size rule, normalization and output kind. "
                                   "With MODEL (a name, hub id or local directory) show only that one; "
                                   "nothing is downloaded.")
    p.add_argument("model", nargs="?", help="registry name, hub id (cached) or local model directory")
    p.add_argument("--json", action="store_true", help="print the specs as JSON")
    p.set_defaults(func=_cmd_models)


def _cmd_prompt_info(args: argparse.Namespace) -> int:
    from bgprompt_core.method.checkpoint import read_meta

    meta = read_meta(args.checkpoint)
    print(json.dumps(json.loads(meta.to_json()), indent=2))
    return 0


def register_prompt_info(sub) -> None:
    p = sub.add_parser("prompt-info", help="print the metadata of a prompt checkpoint",
                       description="Print the JSON metadata of a .safetensors prompt checkpoint: prompt config, "
                                   "the network it was learned through, Eq. 2 settings, training config, metrics.")
    p.add_argument("checkpoint", help="prompt checkpoint (.safetensors)")
    p.set_defaults(func=_cmd_prompt_info)


def _cmd_import_prompt(args: argparse.Namespace) -> int:
    from bgprompt_core.networks.loading import resolve_spec
    from bgprompt_core.method.checkpoint import import_authors_prompt, save_prompt

    network = resolve_spec(args.network, local_only=True)
    prompt, meta = import_authors_prompt(args.source, network, divisor=args.divisor)
    out = save_prompt(args.out, prompt, meta)
    h, w = meta.prompt.height, meta.prompt.width
    print(f"imported a {h}x{w} Fourier prompt (decay {meta.prompt.decay}) for {network.name} -> {out}")
    return 0


def register_import_prompt(sub) -> None:
    p = sub.add_parser("import-prompt", help="convert an authors' released 1-BG prompt (.pth.tar) to our format",
                       description="Read a single-background prompt released with the paper "
                                   "(single_background_fft_<net>.pth.tar) with torch.load(weights_only=True) and "
                                   "write it as a bgprompt .safetensors checkpoint for the given network. Files "
                                   "holding pickled objects are refused.")
    p.add_argument("source", help="the authors' .pth.tar file")
    p.add_argument("--network", required=True, help="registry name of the network it was trained for (e.g. dpt-large)")
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.add_argument("--divisor", type=float, default=0.2, help="irfft divisor used by the authors' code (0.2)")
    p.set_defaults(func=_cmd_import_prompt)


def _cmd_render(args: argparse.Namespace) -> int:
    import time

    from .render.generate import RenderConfig
    from .render.preview import contact_sheet
    from .render.store import render_dataset

    cfg = RenderConfig(kind=args.kind, size=args.size, seed=args.seed, families=tuple(args.families),
                       meshes=args.meshes, mesh_up=args.mesh_up, textures=args.textures,
                       elevation=tuple(args.elevation), roll_jitter=args.roll_jitter, offcenter=args.offcenter,
                       crop=args.crop, closeup=args.closeup, sensor=args.sensor, materials=tuple(args.materials))
    t0 = time.perf_counter()
    manifest = render_dataset(cfg, args.out, args.count, backend=args.backend, workers=args.workers,
                              shard_size=args.shard_size)
    dt = time.perf_counter() - t0
    print(f"rendered {manifest['count']} {cfg.kind} at {cfg.size}px with {','.join(manifest['backend'])} in "
          f"{dt:.1f} s ({manifest['count'] / dt:.1f}/s) -> {args.out}")
    if manifest["skipped_meshes"]:
        print(f"skipped {len(manifest['skipped_meshes'])} unreadable mesh files: {manifest['skipped_meshes']}")
    if args.preview:
        from .data.rendered import RenderedDataset

        ds = RenderedDataset(args.out)
        path = contact_sheet([ds.raw(i) for i in range(min(args.preview, len(ds)))], Path(args.out) / "preview.png")
        print(f"preview: {path}")
    return 0


def register_render(sub) -> None:
    from .render.meshes import FAMILIES
    p = sub.add_parser("render", parents=shared("seed"),
                       help="render synthetic objects or indoor scenes with exact depth, masks, normals",
                       description="Render a data set: `objects` (one object per image, ABO-like camera on the upper "
                                   "hemisphere, white background, RGBA kept) or `scenes` (closed rooms with tables, "
                                   "objects and clutter; full-image depth) or `tabletop` (2-5 objects of four "
                                   "materials on a table seen by a robot from 0.4-1.2 m, 30-70 degrees down, with a "
                                   "simulated RGB-D sensor's depth beside the ground truth; the mask is the target "
                                   "object, the others are instances). Every sample is reproducible from "
                                   "(seed, index). Output: npz shards + manifest.json (conventions and generator "
                                   "config).")
    p.add_argument("kind", choices=["objects", "scenes", "tabletop"])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--count", type=int, required=True, help="number of samples")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (square)")
    p.add_argument("--backend", choices=["auto", "gl", "numpy"], default="auto",
                   help="gl: moderngl on EGL (fast); numpy: pure-numpy ray caster; auto: gl, else numpy")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (one shard each at a time)")
    p.add_argument("--shard-size", type=int, default=64, help="samples per npz shard")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                   help="procedural shape families to draw from")
    p.add_argument("--meshes", help="folder of real meshes (OBJ/GLB/PLY...) used instead of procedural shapes")
    p.add_argument("--mesh-up", choices=["y", "z"], default="y", help="up axis of the mesh files")
    p.add_argument("--textures", help="folder of material images used besides procedural textures")
    p.add_argument("--elevation", nargs=2, type=float, default=[0.0, 75.0], metavar=("MIN", "MAX"),
                   help="camera elevation range in degrees (objects)")
    p.add_argument("--roll-jitter", type=float, default=0.0, help="camera roll std in degrees (objects)")
    p.add_argument("--offcenter", type=float, default=0.0,
                   help="max off-centre shift of the object, fraction of half the image (objects)")
    p.add_argument("--crop", type=float, default=0.0, help="probability of a close view cutting the object (objects)")
    p.add_argument("--closeup", type=float, default=0.0,
                   help="probability of a close view of one object in its room (scenes; mini uses 0.5)")
    from bgprompt_core.evaluation.sensor_model import MATERIALS, SENSORS

    p.add_argument("--sensor", choices=SENSORS, default="d435-like",
                   help="tabletop: simulated RGB-D sensor (d435-like: active stereo; none: perfect depth)")
    p.add_argument("--materials", nargs=len(MATERIALS), type=float, default=[1.0] * len(MATERIALS),
                   metavar=tuple(m.upper() for m in MATERIALS), help="tabletop: weights of the object materials")
    p.add_argument("--preview", type=int, default=0, metavar="N",
                   help="also write preview.png: RGB | depth | normals | mask for the first N samples")
    p.set_defaults(func=_cmd_render)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .distributed import init_distributed, shutdown
    from .pretrain import pretrain

    dist = init_distributed(args.dist_backend)
    metrics = pretrain(args.config, args.data, args.val, args.out, steps=args.steps, log_dir=args.logdir, dist=dist)
    shutdown(dist)  # on an error the process just exits: torchrun then stops the other ranks
    if dist.main:
        print(f"saved {args.out}: held-out scenes AbsRel {metrics['abs_rel']:.4f}, delta1 {metrics['delta1']:.4f} "
              f"({metrics['steps']} steps, {metrics['train_seconds']:.0f} s)")
    return 0


def register_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", parents=shared("logdir"),
                       help="train the embedded depth network on rendered scenes (relative disparity)",
                       description="Train a small depth network of a transformers architecture (configs/mini.json: "
                                   "DPT-hybrid) on `bgprompt render scenes` output ONLY, with MiDaS's scale-and-shift-"
                                   "invariant loss, and save it in Hugging Face layout. Reports AbsRel and delta<1.25 "
                                   "after scale-shift alignment on held-out scenes.")
    p.add_argument("--config", default=str(PACKAGE_CONFIGS / "mini.json"),
                   help="architecture + training config (default: mini.json, installed with bgprompt_training in "
                        f"{PACKAGE_CONFIGS})")
    p.add_argument("--data", required=True, help="rendered scenes for training")
    p.add_argument("--val", required=True, help="held-out rendered scenes")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--steps", type=int, help="override the number of steps")
    dist_backend_arg(p)
    p.set_defaults(func=_cmd_pretrain)


def _cmd_train(args: argparse.Namespace) -> int:
    from .distributed import init_distributed, shutdown
    from .train import TrainConfig, Trainer

    # every TrainConfig field is a flag of the same name (dest), so the config is built from the names
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    dist = init_distributed(args.dist_backend)
    result = Trainer(cfg, dist).run(resume=args.resume, kill_at=args.kill_at)
    shutdown(dist)  # on an error the process just exits: torchrun then stops the other ranks
    if dist.main:
        best = result["best"] or {}
        print(f"best ({cfg.select_by}) at step {best.get('step')}: " +
              ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k != "step") + f" -> {cfg.out}")
        sv = result.get("supervision")
        if sv and cfg.supervision == "truth":
            print(f"supervised by the GROUND TRUTH (--supervision truth: a comparison run) of {sv['objects']} objects "
                  f"in {sv['frames']} frames")
        elif sv:
            print(f"supervised by the sensor: {sv['supervised_pixels']} pixels of {sv['objects']} objects "
                  f"({100 * sv['supervised_share']:.1f}% of their input pixels) in {sv['frames']} frames; "
                  f"details in {cfg.out}.state/supervision.json")
    return 0


def register_train(sub) -> None:
    p = sub.add_parser("train", parents=shared("seed", "device", "logdir", "local-only"),
                       help="learn a background prompt (1-BG or PNet) or finetune a network (baseline)",
                       description="Learn a background prompt by backpropagation through the FROZEN depth network "
                                   "(paper Sec. 3): loss si-RMSE (Eq. 3) + normal loss (Eq. 4), GT masked mean 5, SGD "
                                   "momentum 0.9, lr 5e-4 divided by 10 at 80%% of the steps (reference code; the "
                                   "paper's text says --lr 5e-5). --prompt finetune trains the network's weights "
                                   "instead (the paper's baseline). Validates every --val-every steps on --val, keeps "
                                   "the best checkpoint by --select-by, and can --resume exactly.")
    p.add_argument("--model", required=True, help="registry name, hub id or local model directory")
    p.add_argument("--data", nargs="+", required=True, metavar="SPEC[@W]",
                   help="training sets: a render directory, FORMAT:PATH (abo, hm3d-abo, hndr, npz, gso) or a ROS 2 "
                        "bag (a rosbag2 directory with metadata.yaml, or bag:DIR; mcap or sqlite3; supervised by its "
                        "sensor's trustworthy readings only, its ground truth never enters the loss), optionally "
                        "@WEIGHT for mixing")
    p.add_argument("--val", nargs="*", default=[], metavar="SPEC", help="held-out sets for validation")
    p.add_argument("--out", required=True, help="prompt checkpoint (.safetensors) or, for finetune, a model directory")
    p.add_argument("--prompt", choices=["1bg", "pnet", "finetune", "single"], default="1bg",
                   help="1bg: one learned background (paper's 1-BG); pnet: the mask-conditioned Prompting network; "
                        "finetune: the network's own weights on a white background (the paper's baseline); "
                        "'single' is a deprecated spelling of 1bg")
    p.add_argument("--param", choices=["fourier", "pixel"], default="fourier", help="ablation: 'Img space' = pixel")
    p.add_argument("--composite", choices=["replace", "additive"], default="replace", help="ablation: 'Additive'")
    p.add_argument("--pnet-input", choices=["mask", "image"], default="mask", help="ablation: 'Img input' = image")
    p.add_argument("--no-bias", dest="bias", action="store_false", help="ablation: PNet without the learned 1-BG bias")
    p.add_argument("--pnet-downs", type=int, default=7, help="PNet U-Net downsamplings (paper: 7)")
    p.add_argument("--pnet-channels", type=int, default=64, help="PNet U-Net base channels (paper: 64)")
    p.add_argument("--pnet-combine", choices=["mean", "residual"], default="mean",
                   help="PNet + bias: mean of the two images (reference code) or residual logits (the U-Net "
                        "starts at zero, so the PNet starts exactly at its bias)")
    p.add_argument("--init-bias", metavar="CKPT", help="initialise the PNet bias from a trained 1-BG prompt")
    p.add_argument("--divisor", type=float, default=0.2, help="Fourier irfft divisor (reference 0.2, Lucent 4.0)")
    p.add_argument("--eq2-range", choices=["image", "object"], default="image",
                   help="Eq. 2 min/max over the whole image (paper) or the object only")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8, help="global batch: under torchrun each of the N processes "
                                                         "takes batch / N of it")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-drop-at", type=float, default=0.8, help="fraction of steps after which lr is divided by 10")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (paper: 0.9)")
    p.add_argument("--size", type=int, help="network input side (default: the network's own)")
    p.add_argument("--recenter", action="store_true", help="augmentation: re-centre objects by a virtual camera")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--val-samples", type=int, default=64)
    p.add_argument("--select-by", choices=["si_rmse", "shape_err", "normal_cos", "loss"], default="si_rmse",
                   help="metric that picks the best checkpoint")
    p.add_argument("--collapse-warn", type=float, default=0.10,
                   help="warn when this share of validation objects collapses to a flat depth (default 0.10)")
    p.add_argument("--init", metavar="PROMPT",
                   help="warm start: 'shipped' (the model's shipped prompt of --prompt's kind), 1bg, pnet, tabletop "
                        "or a checkpoint; the prompt takes that checkpoint's config")
    g = p.add_argument_group("bags (--data bag:PATH): the node's topics and synchronization, as `bag eval`")
    g.add_argument("--image-topic", help="default /camera/color/image_raw, then common driver layouts")
    g.add_argument("--info-topic", help="default /camera/color/camera_info")
    g.add_argument("--mask-topic", help="instance labels (16UC1 / 32SC1) or a mono8 mask; default "
                                        "/camera/color/object_mask")
    g.add_argument("--depth-topic", help="the RGB-D sensor's depth, 16UC1 mm or 32FC1 m; default "
                                         "/camera/aligned_depth_to_color/image_raw")
    g.add_argument("--truth-topic", help="ground-truth depth, for validation only (default /ground_truth/depth when "
                                         "present)")
    g.add_argument("--stride", type=int, default=1, help="use every N-th synchronized frame")
    g.add_argument("--sync", choices=["exact", "approximate"], default="exact")
    g.add_argument("--slop", type=float, default=0.015, help="approximate sync: seconds")
    g.add_argument("--mask-labels", action="store_true", help="mono8 mask values are object ids")
    g.add_argument("--min-pixels", type=int, default=32,
                   help="trustworthy sensor pixels an object needs at network resolution (fewer: skipped, counted)")
    g.add_argument("--supervision", choices=["sensor", "truth"], default="sensor",
                   help="sensor: the trustworthy readings (robots); truth: the bag's ground truth (comparison runs "
                        "only)")
    g.add_argument("--smooth-sigma", type=float, default=1.0,
                   help="px, Gaussian smoothing of the trusted sensor depth for Eq. 4's normals (0: none)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.state/ exactly")
    p.add_argument("--kill-at", type=int, help=argparse.SUPPRESS)
    dist_backend_arg(p)
    p.set_defaults(func=_cmd_train)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .eval import evaluate, scene_drift, write_outputs

    rows = evaluate(args.model, args.data, prompts=args.prompt or [], backgrounds=args.background,
                    finetuned=args.finetuned or [], count=args.count, eq2_variants=not args.no_eq2_variants,
                    recenter=args.recenter, local_only=args.local_only,
                    figures=Path(args.figures) if args.figures else None, figure_count=args.figure_count)
    table = write_outputs(rows, Path(args.out) if args.out else None, Path(args.json) if args.json else None)
    print(table)
    if args.scenes:
        drift = scene_drift(args.model, args.finetuned or [], args.scenes, args.local_only, "cpu")
        lines = ["", "| network | held-out scenes | AbsRel ↓ | delta<1.25 ↑ |", "|---|---|---|---|"]
        lines += [f"| {r['network']} | {r['scenes']} | {r['abs_rel']:.4f} | {r['delta1']:.4f} |" for r in drift]
        print("\n".join(lines))
        if args.json:
            data = json.loads(Path(args.json).read_text())
            data["scene_quality"] = drift
            Path(args.json).write_text(json.dumps(data, indent=2))
    return 0


def register_eval(sub) -> None:
    p = sub.add_parser("eval", parents=shared("local-only"),
                       help="evaluate backgrounds, finetuned networks and prompts (paper Tables 1-3, S1-S3)",
                       description="Evaluate one network under several conditions on several data sets with the "
                                   "paper's protocol (--count samples drawn with seed 1338; GT masked mean 5): si-RMSE "
                                   "(Eq. 3, lower better), normal cosine (higher better), shape_err (scale-and-shift-"
                                   "aligned disparity RMSE, blind to Eq. 2), skill vs the flat reference, and the "
                                   "fraction of collapsed (flattened) objects. The references `flat` and "
                                   "`oracle-shift` are always included.")
    p.add_argument("--model", required=True, help="the base network (registry name, hub id or directory)")
    p.add_argument("--data", nargs="+", required=True, metavar="SPEC",
                   help="data sets: render directories or FORMAT:PATH (abo, hm3d-abo, hndr, npz, gso)")
    p.add_argument("--prompt", nargs="*", metavar="CKPT", help="prompt checkpoints (1-BG or PNet)")
    p.add_argument("--background", nargs="+", default=["white"], metavar="BG",
                   help="no-prompt conditions: white, original, noise, or a folder of images")
    p.add_argument("--finetuned", nargs="*", metavar="DIR", help="finetuned network directories (baseline)")
    p.add_argument("--count", type=int, default=300, help="samples per data set (paper: 300)")
    p.add_argument("--no-eq2-variants", action="store_true",
                   help="evaluate prompts only with their own Eq. 2 range (default: also the other one)")
    p.add_argument("--recenter", action="store_true", help="re-centre objects by a virtual camera first")
    p.add_argument("--scenes", help="held-out rendered scenes: report scene-quality drift of finetuned networks")
    p.add_argument("--out", help="directory for results.md and results.csv")
    p.add_argument("--json", help="write {'rows': [...]} here")
    p.add_argument("--figures", help="directory for Figure 5/6 style PNGs")
    p.add_argument("--figure-count", type=int, default=4, help="samples per data set in the figures")
    p.set_defaults(func=_cmd_eval)


def _estimator_config(args: argparse.Namespace):
    from bgprompt_core.frame.estimator import EstimatorConfig

    return EstimatorConfig(model=args.model, prompt=args.prompt, backend=args.backend, onnx=args.onnx,
                           device=args.device, precision=args.precision, scale=args.scale,
                           recenter=args.recenter, segmentation="rembg" if args.rembg else "none",
                           rembg_model=args.rembg or "u2net", local_only=not args.allow_download)


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from bgprompt_core.frame.estimator import ObjectDepthEstimator

    if args.mask and len(args.mask) != len(args.images):
        raise ConfigError(f"{len(args.images)} images but {len(args.mask)} masks: give one mask per image")
    if not args.mask and not args.rembg:
        raise ConfigError("no masks: give --mask FILE for each image, or --rembg MODEL to segment them (e.g. "
                          "--rembg u2net with the model file installed for rembg)")
    missing = [p for p in [*args.images, *(args.mask or [])] if not Path(p).is_file()]
    if missing:  # before any model loads or any output is written
        raise FileNotFoundError(f"not found: {', '.join(missing)}")
    fx, fy, cx, cy = args.intrinsics
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    est = ObjectDepthEstimator(_estimator_config(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.mask and est.model is None:
        print(f"note: no {{stem}}_composite.png previews: the exported graph ({args.onnx}) carries the prompt inside "
              f"it and runs without the torch model; `--backend torch` shows what the network sees")
    written: list[str] = []
    try:
        for i, path in enumerate(args.images):
            _predict_one(est, path, args.mask[i] if args.mask else None, K, out)
            written.append(Path(path).stem)
    except BaseException:
        if written:  # never leave partial outputs unannounced
            print(f"bgprompt predict: outputs of {len(written)} of {len(args.images)} images were written to "
                  f"{out}/ before the error ({', '.join(written)}); the others were not", file=sys.stderr)
        raise
    return 0


def _predict_one(est, path: str, mask_path: str | None, K, out: Path) -> None:
    """One image of `bgprompt predict`: read image and mask the same way up, estimate, write the outputs."""
    import numpy as np

    from bgprompt_core.evaluation.colormaps import depth_to_color

    from .figures import side_view, write_png
    from .image_files import ROTATION_WORDS, read_image, read_mask
    from .ply import write_ply

    rgb, orientation = read_image(path)
    notes = [f"{path}: EXIF orientation {orientation}: read as displayed ({ROTATION_WORDS[orientation]}); --intrinsics "
             f"must describe the displayed image"] if orientation != 1 else []
    mask = None
    if mask_path is not None:
        mask, how, mask_orientation = read_mask(mask_path)
        notes.append(f"mask {mask_path}: {how}")
        if mask_orientation != orientation:
            notes.append(f"{mask_path} has EXIF orientation {mask_orientation}, {path} {orientation}: each is read as "
                         f"displayed; if the mask was drawn on the image's stored pixels they do not line up")
        if mask.shape[:2] != rgb.shape[:2] and mask.shape[:2] == rgb.shape[1::-1]:
            raise ConfigError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}, image {path} "
                              f"{rgb.shape[1]}x{rgb.shape[0]} as displayed: one of them is rotated (EXIF orientation "
                              f"{mask_orientation} vs {orientation}); save both the same way up")
    res = est.estimate(rgb, K, mask)
    stem = Path(path).stem
    np.save(out / f"{stem}_depth.npy", res.depth)
    write_png(out / f"{stem}_depth.png", depth_to_color(np.nan_to_num(res.depth), res.valid))
    write_ply(out / f"{stem}.ply", res.points[res.valid], rgb[res.valid])
    if mask is not None and est.model is not None:
        write_png(out / f"{stem}_composite.png", est.composite_preview(rgb, mask, K))
    import torch

    write_png(out / f"{stem}_side.png", side_view(torch.from_numpy(np.nan_to_num(res.depth)), torch.from_numpy(K),
                                                  torch.from_numpy(res.valid.astype(np.float32)),
                                                  torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, 256))
    print(f"{path}: {len(res.object_ids)} object(s), {int(res.valid.sum())} points ({res.units}), "
          f"network {res.timing_ms['network']:.0f} ms, total {res.timing_ms['total']:.0f} ms -> {out}/{stem}_*")
    for line in notes:
        print(f"  note: {line}")
    for w in res.warnings:
        print(f"  warning: {w}")


def runtime_args(p: argparse.ArgumentParser) -> None:
    """The network and prompt flags of the inference verbs (predict, export)."""
    from bgprompt_core.runtime.build import PROMPT_HELP

    p.add_argument("--model", default="mini", help="depth network (default: the embedded `mini`)")
    p.add_argument("--prompt", default="1bg", help=PROMPT_HELP)
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    p.add_argument("--allow-download", action="store_true", help="let transformers fetch hub models")


def register_predict(sub) -> None:
    p = sub.add_parser("predict", parents=shared("device"),
                       help="object depth and point clouds for image files",
                       description="Run the object-depth pipeline (the one the ROS node uses) on images: writes "
                                   "depth (.npy float32, NaN outside objects, and a colour PNG), the object point "
                                   "cloud (.ply with colour), the composite the network saw and a side view.")
    p.add_argument("images", nargs="+", help="RGB images")
    p.add_argument("--mask", nargs="+",
                   help="one mask per image: binary, soft (8-bit with anti-aliased edges, or an RGBA cut-out's "
                        "alpha), instance labels (8/16-bit values 1, 2, ..., palette PNG indices as in VOC/DAVIS, "
                        "or distinct colours), or .npy; read with its EXIF orientation, like the image")
    p.add_argument("--rembg", metavar="MODEL", help="segment with this rembg model when no mask is given")
    p.add_argument("--intrinsics", nargs=4, type=float, required=True, metavar=("FX", "FY", "CX", "CY"))
    runtime_args(p)
    p.add_argument("--backend", choices=["torch", "onnxruntime", "tensorrt"], default="torch")
    p.add_argument("--onnx", help="exported graph for onnxruntime / tensorrt (default: exported on first use)")
    p.add_argument("--scale", choices=["relative", "metric"], default="relative")
    p.add_argument("--recenter", action="store_true", help="re-centre each object by a virtual camera")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_predict)


def _cmd_export(args: argparse.Namespace) -> int:
    from bgprompt_core.frame.estimator import EstimatorConfig
    from bgprompt_core.runtime.export import export_onnx
    from bgprompt_core.runtime.build import build_model

    cfg = EstimatorConfig(model=args.model, prompt=args.prompt, backend="onnxruntime", precision=args.precision,
                          local_only=not args.allow_download)
    model = build_model(cfg)
    size = model.net.spec.input_size[0]
    onnx_path = Path(args.out) if args.format == "onnx" else Path(args.out).with_suffix(".onnx")
    if args.format == "tensorrt":
        from bgprompt_core.runtime.build import check_tensorrt_available

        check_tensorrt_available()  # before a long export
    export_onnx(model, onnx_path, size, max_batch=args.max_batch, half=args.precision == "fp16", opset=args.opset)
    print(f"exported {model.net.spec.name} + prompt {args.prompt} ({size}x{size}, batch 1..{args.max_batch}, "
          f"{args.precision}, opset {args.opset}) -> {onnx_path}")
    if args.format == "tensorrt":
        from bgprompt_core.runtime.tensorrt_backend import build_engine

        engine, reason = build_engine(onnx_path, onnx_path.parent, args.precision, size, args.max_batch,
                                      name=f"{onnx_path.stem}-{args.precision}")
        print(f"TensorRT engine: {engine} ({reason or 'up to date: reused'}); the node builds the same engine "
              f"when given backend: tensorrt, onnx: {onnx_path}, cache_dir: {onnx_path.parent}")
    return 0


def register_export(sub) -> None:
    p = sub.add_parser("export", help="export prompt + network to ONNX (and build a TensorRT engine)",
                       description="Export the deployable graph: image and mask in, object depth out (Eq. 1 + frozen "
                                   "network + Eq. 2), dynamic batch for several objects. The 1-BG prompt is baked in "
                                   "as a constant image and PNet uses matrix DFTs, so TensorRT can build it. With "
                                   "--format tensorrt the engine is built next to --out on this machine's GPU: run it "
                                   "on the robot itself (an engine is specific to its GPU and TensorRT version; see "
                                   "docs/DEPLOYMENT.md).")
    runtime_args(p)
    p.add_argument("--format", choices=["onnx", "tensorrt"], default="onnx")
    p.add_argument("--max-batch", type=int, default=16,
                   help="most objects per frame the graph / engine takes (the node's max_objects; default 16)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET}: TensorRT 8.6 reads up to 17, 10.x up to 20)")
    p.add_argument("--out", required=True, help="output .onnx (for tensorrt: the engine is written beside it)")
    p.set_defaults(func=_cmd_export)


def _cmd_assets(args: argparse.Namespace) -> int:
    from .assets import HOUSEHOLD, OBJECTS, household_meshes, real_meshes

    if args.kind == "household":
        wheels = dict(w.split("=", 1) for w in args.wheel or [])
        out = household_meshes(args.out, wheels)
        print(f"extracted {len(HOUSEHOLD)} household meshes (z-up) -> {out}")
        return 0
    if args.wheel and len(args.wheel) > 1:
        raise ConfigError("real-meshes takes one --wheel (pybullet's)")
    out = real_meshes(args.out, args.wheel[0] if args.wheel else None)
    print(f"extracted {len(OBJECTS)} real meshes (z-up) -> {out}")
    return 0


def register_assets(sub) -> None:
    p = sub.add_parser("assets", help="fetch real textured meshes (pybullet's objects) for out-of-distribution tests",
                       description="Download the pybullet wheel from the package index with pip and extract a fixed "
                                   "list of object meshes (duck, bunny, teddy, mug, domino, jenga, lego, tray, torus, "
                                   "soccer ball and 30 random shapes) with their materials. Render them with "
                                   "`bgprompt render objects --meshes DIR --mesh-up z`.")
    p.add_argument("kind", choices=["real-meshes", "household"],
                   help="real-meshes: pybullet's objects (docs/RESULTS.md's out-of-distribution set); household: "
                        "robosuite's groceries and pybullet's kitchen objects for `render tabletop --meshes DIR "
                        "--mesh-up z` (docs/grasp)")
    p.add_argument("--out", required=True)
    p.add_argument("--wheel", nargs="+", help="use these wheels instead of downloading them (real-meshes: a path; "
                                              "household: pybullet=PATH robosuite=PATH)")
    p.set_defaults(func=_cmd_assets)


def _cmd_results(args: argparse.Namespace) -> int:
    from .results import make_results

    out = make_results(Path(args.out), Path(args.cache), args.count, figures=not args.no_figures)
    print(out.read_text())
    print(f"wrote {out}")
    return 0


def register_results(sub) -> None:
    p = sub.add_parser("results", help="regenerate docs/RESULTS.md for the embedded `mini` network",
                       description="Render the evaluation sets (cached), fetch pybullet's real meshes, evaluate the "
                                   "shipped prompts, finetuned baseline and references, and write the results "
                                   "document with tables, goal checks and figures.")
    p.add_argument("--out", default="docs/RESULTS.md")
    p.add_argument("--cache", default=".cache/results", help="rendered evaluation sets")
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=_cmd_results)


def _cmd_eval_grasp(args: argparse.Namespace) -> int:
    from .grasp_eval import (DEFAULT_PARAMS, GraspEvalConfig, _Methods, evaluate_grasp, merge_results,
                             read_node_params, write_report)

    params = args.params or str(DEFAULT_PARAMS)
    shipped = read_node_params(params).get("prompt", "1bg")
    prompts = tuple(args.prompt) + (() if shipped in args.prompt else (shipped,))  # the goals' prompt always runs
    cfg = GraspEvalConfig.from_params_file(
        params, model=args.model, prompts=prompts, oracle_prompt=args.oracle_prompt,
        sensors=tuple(args.sensor), count=args.count, min_pixels=args.min_pixels, local_only=args.local_only,
        bootstrap=args.bootstrap)
    methods = _Methods(cfg)
    results = [evaluate_grasp(d, cfg, keep_clouds=args.figures, methods=methods) for d in args.data]
    path = write_report(merge_results(results, cfg), Path(args.out), cfg, params)
    print(path.read_text())
    print(f"report: {path}")
    return 0


def _cmd_eval_resolution(args: argparse.Namespace) -> int:
    from .resolution import run_cli

    return run_cli(args)


def register_eval_resolution(sub) -> None:
    p = sub.add_parser("eval-resolution", help="object depth at full resolution: coverage, thin parts, Chamfer",
                       description="Depth for every mask pixel at the frame's resolution (issue 29): the estimator's "
                                   "joint bilateral upsampling against the bilinear one it replaced, on tabletop "
                                   "renders and real-mesh renders, with `mini` and with an oracle network (the "
                                   "ground truth on the network's grid). Renders its frames into --cache when "
                                   "absent; writes a markdown table, a JSON summary and a before / after PNG.")
    p.add_argument("--out", default="docs/RESOLUTION.md", help="markdown report (a .json and .png beside it)")
    p.add_argument("--cache", default=".cache/resolution", help="rendered frames (reused when present)")
    p.add_argument("--model", default="mini", help="depth network")
    p.add_argument("--prompt", default="1bg", help="its prompt")
    p.add_argument("--count", type=int, default=24, help="frames per data set")
    p.add_argument("--sigma-color", type=float, default=100.0, help="joint bilateral colour std (0-255 units)")
    p.add_argument("--wheel", help="a local pybullet wheel for the real meshes (default: pip downloads it)")
    p.set_defaults(func=_cmd_eval_resolution)


def register_eval_grasp(sub) -> None:
    from bgprompt_core.evaluation.sensor_model import PRESETS

    p = sub.add_parser("eval-grasp", help="object clouds in metres from simulated RGB-D sensors, by material",
                       description="On `bgprompt render tabletop` frames (procedural shapes, or real meshes with "
                                   "`render tabletop --meshes`), score each object's cloud against the ground-truth "
                                   "surface in mm (Chamfer, accuracy and completeness within 5/10 mm, centroid, "
                                   "oriented-box extents, parallel-jaw grasp width and centre) for: the raw sensor, "
                                   "cv2.inpaint in mm (Telea, NS), each prompt + fusion with the settings of the "
                                   "params file, the fill before issue 24 (prediction only), and an oracle aligned "
                                   "to the ground truth; for every sensor preset (each frame re-simulated). Writes "
                                   "summary.md (median and mean, no-cloud shares, the goals with bootstrap "
                                   "intervals), results.json and figures.")
    p.add_argument("--data", nargs="+", required=True, help="`bgprompt render tabletop` directories (one set each)")
    p.add_argument("--model", default="mini")
    p.add_argument("--prompt", nargs="+", default=["none", "1bg", "pnet", "tabletop"],
                   help="prompts fused with the sensor: none (white background), 1bg, pnet, tabletop, or paths; the "
                        "params file's prompt (the goals are judged on it) is added when missing")
    p.add_argument("--params", help="the node's params file whose settings are measured (default: the shipped "
                                    "config/object_depth_rgbd.yaml): prompt, align, recenter, fusion_*")
    p.add_argument("--sensor", nargs="+", default=list(PRESETS), choices=["stored", *PRESETS],
                   help=f"sensor presets to evaluate (default: all: {', '.join(PRESETS)}); stored: the render's own")
    p.add_argument("--oracle-prompt", help="prompt of the oracle and fill-comparison rows (default: the shipped one)")
    p.add_argument("--count", type=int, help="at most this many frames per data set")
    p.add_argument("--min-pixels", type=int, default=150, help="objects with fewer mask pixels are left out")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of the ratios' 95%% intervals")
    p.add_argument("--figures", type=int, default=3, help="objects per (set, sensor, material) in the cloud figures "
                                                       "(0: none)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--local-only", action="store_true", default=True, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_eval_grasp)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out))


def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on the embedded default and write a report",
                       description="Run the end-to-end demonstration offline and write its outputs under --out.")
    p.add_argument("--out", default="demo", help="output directory (default: demo/)")
    p.set_defaults(func=_cmd_demo)


# flags several verbs share, given to them as argparse parents (one definition each)
SHARED_FLAGS = {
    "seed": lambda p: p.add_argument("--seed", type=int, default=0, help="random seed (default 0)"),
    "device": lambda p: p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1..."),
    "logdir": lambda p: p.add_argument("--logdir", help="TensorBoard log directory"),
    "local-only": lambda p: p.add_argument("--local-only", action="store_true",
                                           help="never touch the network for model files"),
}


def shared(*names: str) -> list[argparse.ArgumentParser]:
    """Parent parsers for the shared flags ``names`` (``sub.add_parser(..., parents=shared("seed"))``)."""
    parents = []
    for name in names:
        parent = argparse.ArgumentParser(add_help=False)
        SHARED_FLAGS[name](parent)
        parents.append(parent)
    return parents


def dist_backend_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dist-backend", choices=["auto", "nccl", "gloo"], default="auto",
                   help="under torchrun (torchrun --nproc_per_node N -m bgprompt_training VERB ...): nccl on GPUs, "
                        "gloo on CPU (auto); the batch is the global batch, split over the N processes "
                        "(docs/DISTRIBUTED.md)")


VERBS = (
    register_models,
    register_prompt_info,
    register_import_prompt,
    register_render,
    register_pretrain,
    register_train,
    register_eval,
    register_predict,
    register_export,
    register_assets,
    register_results,
    register_eval_grasp,
    register_eval_resolution,
    register_demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgprompt", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for register in VERBS:
        register(sub)
    from importlib.metadata import entry_points

    for ep in entry_points(group="bgprompt.verbs"):  # verbs of other layers register themselves too (`bag`)
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bgprompt_core.errors import BgpromptError

    try:
        return int(args.func(args) or 0)
    except (BgpromptError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        # the project's own errors (and missing / clashing files) say what to do; anything else is a bug and
        # keeps its traceback
        print(f"bgprompt {args.verb}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
