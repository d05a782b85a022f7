"""`bgprompt predict` and `export`: the deployed pipeline on image files, and the deployable graph."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bgprompt_core.method.config import ConfigError
from bgprompt_core.runtime.graph_contract import DEFAULT_OPSET

from .common import runtime_args, shared


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

    from ..figures import side_view, write_png
    from ..image_files import ROTATION_WORDS, read_image, read_mask
    from ..ply import write_ply

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
