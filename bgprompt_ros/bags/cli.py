"""`bgprompt bag ...` verbs (make, eval, play, record), registered into the CLI through the `bgprompt.verbs`
entry point group as ``bgprompt_ros.cli:register`` (the CLI lives in the offline package, which must not import the
ROS layer)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bgprompt_core.settings import FUSIONS, SCALES


def _make(args: argparse.Namespace) -> int:
    from .make import make_bag

    info = make_bag(args.data, args.out, args.storage, args.rate, "none" if args.no_holes else args.sensor, args.seed,
                    args.limit)
    print(f"wrote {info['frames']} frames ({args.storage}) -> {args.out}; topics: " +
          ", ".join(f"{k}={v}" for k, v in info["topics"].items()))
    return 0


def _combos(args: argparse.Namespace):
    from .evaluate import Combo
    from ..params import read_params_file

    base = read_params_file(args.params_file) if args.params_file else {}
    if args.scale:
        base["scale"] = args.scale
    if args.fusion:
        base["fusion"] = args.fusion
    models = args.model or [base.get("model", "mini")]
    prompts = args.prompt or [base.get("prompt", "default")]
    combos = []
    for m in models:
        for p in prompts:
            combos.append(Combo(f"{Path(m).name} + {Path(p).stem if p not in ('default', '1bg', 'pnet', 'tabletop', 'none') else p}",
                                {**base, "model": m, "prompt": p}))
        if not args.no_baseline and "none" not in prompts:
            combos.append(Combo(f"{Path(m).name} + none (white background)", {**base, "model": m, "prompt": "none"}))
    return combos


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import eval_bag

    topics = {k: v for k, v in (("image", args.image_topic), ("camera_info", args.info_topic),
                                ("mask", args.mask_topic), ("depth", args.depth_topic), ("truth", args.truth_topic))
              if v}
    summary = eval_bag(args.bag, _combos(args), topics, segment=args.segment == "rembg", out_dir=args.out,
                       json_path=args.json, out_bag=args.out_bag, sync=args.sync, slop=args.slop,
                       cloud_mode=args.cloud_mode)
    print(Path(args.out, "summary.md").read_text() if args.out else json.dumps(summary["combos"], indent=2))
    print(f"{summary['frames']} frames at {summary['frames_per_second']:.1f} frames/s")
    return 0


def _play(args: argparse.Namespace) -> int:
    from .live import play
    from ..readiness import NotReady

    try:
        done = play(args.bag, args.rate, args.loop, args.wait_subscribers, args.wait_timeout, topics=args.topics,
                    wait_nodes=args.wait_node, max_gap=None if args.max_gap <= 0 else args.max_gap)
    except NotReady as exc:
        print(f"bag play: nothing published: {exc}", file=sys.stderr)
        return 2
    print(f"published {done.published} messages from {args.bag}")
    if done.skipped:
        print(f"bag play: skipped {sum(done.skipped.values())} corrupt message(s): {done.skipped_note()}",
              file=sys.stderr)
    return 0


def _pairs(items: list[str], sep: str, what: str) -> dict[str, str]:
    bad = [item for item in items if sep not in item]
    if bad:
        raise SystemExit(f"bag record: {what} must look like A{sep}B, got {bad}")
    return dict(item.split(sep, 1) for item in items)


def _record(args: argparse.Namespace) -> int:
    from .live import record
    from ..readiness import NotReady

    topics = _pairs(args.topics, ":", "--topics")
    expect = {t: int(n) for t, n in _pairs(args.expect or [], "=", "--expect").items()}
    try:
        rec = record(args.out, topics, args.count, args.duration, args.storage, args.idle_timeout, expect=expect,
                     wait_nodes=args.wait_node, wait_timeout=args.wait_timeout,
                     on_ready=lambda: print("bag record: ready", flush=True))
    except NotReady as exc:
        print(f"bag record: {exc}", file=sys.stderr)
        return 2
    print(f"recorded {rec.total} messages -> {args.out}: {rec.summary()}", flush=True)
    if rec.disk_full:
        print(f"bag record: stopped: {rec.reason}", file=sys.stderr)
        return 3
    if not rec.complete:
        print(f"bag record: {rec.reason}", file=sys.stderr)
        return 1
    return 0


def _register_make(bs) -> None:
    p = bs.add_parser("make", help="write a bag from rendered data (colour, camera_info, mask, RGB-D depth)",
                      description="Write a real ROS 2 bag from a `bgprompt render` directory: rgb8 image, camera_info, "
                                  "the mask (mono8; 16UC1 instance labels of every object for tabletop renders), the "
                                  "RGB-D sensor's 16UC1 millimetre depth (noise growing with z^2, 1 mm steps, shadow "
                                  "and edge bands, flying pixels, material failures; --sensor none: perfect) and, for "
                                  "evaluation only, the ground-truth depth (32FC1 metres on /ground_truth/depth). "
                                  "Consistent stamps and frames.")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second of the stamps")
    p.add_argument("--sensor", choices=["d435-like", "none", "stored"], default="d435-like",
                   help="simulated RGB-D sensor (bgprompt_core.evaluation.sensor_model); tabletop renders carry their own: "
                        "used when it is this preset, and whatever its preset with 'stored' (e.g. a render "
                        "tabletop --sensor harsh-stereo)")
    p.add_argument("--no-holes", action="store_true", help="deprecated: --sensor none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="at most this many frames")
    p.set_defaults(func=_make)


def _register_eval(bs) -> None:
    p = bs.add_parser("eval", help="run the node's pipeline over a bag and measure it against the bag's depth",
                      description="Evaluate object depth on a recorded bag exactly as the node would run (same "
                                  "params file), for several --model/--prompt combinations and the white-background "
                                  "baseline. Per frame, inside the object where the reference is valid: si-RMSE, "
                                  "normal cosine, AbsRel after scale and after scale+shift, coverage, and with "
                                  "--scale align-to-sensor the metric error in metres (fit on one half of the pixels, "
                                  "scored on the other) and, when the bag has ground truth (bag make writes "
                                  "/ground_truth/depth), each object's cloud in mm: Chamfer, accuracy and "
                                  "completeness within 10 mm, centroid error. With ground truth, the sensor's own depth "
                                  "gets a row too ('sensor (raw depth)'), scored the same way. Means are over finite "
                                  "values, and each metric says how many frames (objects, for clouds) were "
                                  "non-finite or missing: (n/N) in summary.md, counts in the JSON and summary.csv. "
                                  "Colour may be sensor_msgs/CompressedImage (jpeg/png); mask and depth must be raw "
                                  "Image (a topic of another type is refused before reading). A frame that cannot "
                                  "be used (sizes differ from the image, undecodable) is skipped and counted by "
                                  "reason. Writes summary.md, summary.csv, per_frame.csv/png, worst_frames.png.")
    p.add_argument("bag")
    p.add_argument("--params-file", help="the node's YAML (config/object_depth.yaml)")
    p.add_argument("--model", nargs="+")
    p.add_argument("--prompt", nargs="+")
    p.add_argument("--no-baseline", action="store_true", help="do not add the white-background baseline")
    p.add_argument("--scale", choices=SCALES)
    p.add_argument("--fusion", choices=FUSIONS, help="with align-to-sensor: fill the sensor's holes")
    p.add_argument("--segment", choices=["mask", "rembg"], default="mask", help="masks from the bag or rembg")
    p.add_argument("--image-topic")
    p.add_argument("--info-topic")
    p.add_argument("--mask-topic")
    p.add_argument("--depth-topic", help="the RGB-D sensor's depth (16UC1 mm or 32FC1 m); the reference too when "
                                         "the bag has no ground truth")
    p.add_argument("--truth-topic", help="ground-truth depth, the reference (default /ground_truth/depth when present)")
    p.add_argument("--sync", choices=["exact", "approximate"], default="exact")
    p.add_argument("--slop", type=float, default=0.015, help="approximate sync: seconds, under half the frame period")
    p.add_argument("--cloud-mode", choices=["dense", "organized"], default="dense",
                   help="--out-bag clouds: dense object points (the node's default) or organized HxW")
    p.add_argument("--out", help="directory for summary.md, summary.csv, per_frame.csv, per_frame.png, "
                                 "worst_frames.png")
    p.add_argument("--json", help="summary JSON")
    p.add_argument("--out-bag", help="write the node's outputs (object_depth/image, object_depth/camera_info, "
                                     "object_points) here; a full disk closes it with the frames before (exit 2 "
                                     "after the evaluation)")
    p.set_defaults(func=_eval)


def _register_play(bs) -> None:
    p = bs.add_parser("play", help="publish a bag with its original relative timing",
                      description="Publish every message of a bag in order with its original relative timing "
                                  "(scaled by --rate), optionally looping and waiting for subscribers. A message "
                                  "that does not deserialize is skipped and counted (reported at the end); a topic "
                                  "with two types in the bag is refused before anything is published (leave it out "
                                  "with --topics).")
    p.add_argument("bag")
    p.add_argument("--rate", type=float, default=1.0)
    p.add_argument("--loop", action="store_true")
    p.add_argument("--wait-node", action="append", metavar="NAME",
                   help="before publishing, wait until this node is ready: in the graph, 'active' if it is a "
                        "lifecycle node, and matched on the played topics it subscribes to (repeatable; "
                        "e.g. --wait-node object_depth --wait-node bgprompt_bag_record)")
    p.add_argument("--wait-subscribers", type=int, default=0,
                   help="also wait until every topic has this many subscribers of any kind (a recorder counts)")
    p.add_argument("--wait-timeout", type=float, default=60.0,
                   help="seconds to wait for the above; then exit 2 naming what did not come up")
    p.add_argument("--topics", nargs="+", help="only these topics")
    p.add_argument("--max-gap", type=float, default=1.0,
                   help="longest pause between two messages in wall seconds (a bag with a long gap in its stamps "
                        "is not replayed as a long sleep); 0: keep every gap")
    p.set_defaults(func=_play)


def _register_record(bs) -> None:
    p = bs.add_parser("record", help="record topics into a new bag",
                      description="Subscribe to TOPIC:TYPE pairs (e.g. /object_points:sensor_msgs/msg/PointCloud2) "
                                  "and write the received messages into a new bag. Prints 'bag record: ready' once "
                                  "subscribed (and --wait-node nodes matched). Stops at the goal (--count, --expect), "
                                  "--duration, --idle-timeout or SIGINT, then prints what it recorded per topic. A full "
                                  "disk stops it too: the bag is closed with what reached the disk (readable, "
                                  "metadata.yaml written; up to the last ~1 MiB chunk, mcap, or 4 MiB, sqlite3, can be "
                                  "lost when the file system refuses a write unannounced). Exit 0 when the goal was "
                                  "reached (or none was given), 1 with the shortfall otherwise, 2 when a --wait-node "
                                  "did not come up, 3 when the disk filled up.")
    p.add_argument("--topics", nargs="+", required=True, metavar="TOPIC:TYPE")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, help="goal: this many messages in all")
    p.add_argument("--expect", nargs="+", metavar="TOPIC=N", help="goal: at least N messages on TOPIC")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--idle-timeout", type=float, help="stop when nothing arrived for this long")
    p.add_argument("--wait-node", action="append", metavar="NAME",
                   help="before printing 'bag record: ready', wait until this node's publishers on the recorded "
                        "topics matched ours (repeatable)")
    p.add_argument("--wait-timeout", type=float, default=60.0, help="seconds to wait for --wait-node (exit 2)")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    p.set_defaults(func=_record)


def register(sub) -> None:
    """Add the `bag` verb group to the `bgprompt` CLI's subparsers (each bag verb registers itself above)."""
    bag = sub.add_parser("bag", help="make, evaluate, play and record ROS 2 bags (mcap / sqlite3)",
                         description="ROS 2 bag tools built on the `rosbags` library (rosbag2_py is not needed).")
    bs = bag.add_subparsers(dest="bag_verb", metavar="BAGVERB", required=True)
    for register_verb in (_register_make, _register_eval, _register_play, _register_record):
        register_verb(bs)
