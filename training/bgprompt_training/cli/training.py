"""`bgprompt pretrain` and `train`: the embedded network on rendered scenes, and a prompt (or finetuned
network) through a frozen one."""
from __future__ import annotations

import argparse
import dataclasses

from bgprompt_core.settings import COMPOSITES

from .common import PACKAGE_CONFIGS, dist_backend_arg, shared


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from ..distributed import init_distributed, shutdown
    from ..pretrain import pretrain

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
    from ..distributed import init_distributed, shutdown
    from ..train import TrainConfig, Trainer

    # every TrainConfig field is a flag of the same name (dest), so the config is built from the names
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    dist = init_distributed(args.dist_backend)
    result = Trainer(cfg, dist).run(resume=args.resume)
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
    _data_and_prompt_flags(p)
    _schedule_flags(p)
    _bag_flags(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT.state/ exactly")
    dist_backend_arg(p)
    p.set_defaults(func=_cmd_train)


def _data_and_prompt_flags(p: argparse.ArgumentParser) -> None:
    """`train`'s network, data sets, output and prompt flags (the paper's ablations among them)."""
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
    p.add_argument("--composite", choices=COMPOSITES, default="replace", help="ablation: 'Additive'")
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


def _schedule_flags(p: argparse.ArgumentParser) -> None:
    """`train`'s optimisation, augmentation, validation and warm-start flags."""
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


def _bag_flags(p: argparse.ArgumentParser) -> None:
    """`train`'s flags for ROS 2 bags among the data sets (the node's topics and synchronization)."""
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
