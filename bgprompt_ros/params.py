"""The node's parameters (ROS-free): declared by the node, read from params files by `bgprompt bag eval`,
and mapped to an EstimatorConfig in one place so the node and the bag evaluator run exactly alike."""
from __future__ import annotations

import math
from pathlib import Path

from bgprompt_core.method.config import ConfigError
from bgprompt_core.frame.estimator import EstimatorConfig
from bgprompt_core.rgbd.fusion import FUSION_FIELDS, FUSION_HELP, HOLE_FILLS, FusionConfig, fusion_config_from_params
from bgprompt_core.runtime.build import PROMPT_HELP
from bgprompt_core.settings import ALIGNS, BACKENDS, FUSIONS, PRECISIONS, SCALES

TYPES = {str: "PARAMETER_STRING", int: "PARAMETER_INTEGER", float: "PARAMETER_DOUBLE", bool: "PARAMETER_BOOL"}
# name: (default, description, allowed values or None, needs reload); the type is the default's
PARAMETERS: dict[str, tuple] = {
    "model": ("mini", "depth network: registry name, hub id or local directory", None, True),
    "prompt": ("1bg", PROMPT_HELP, None, True),
    "backend": ("auto", "inference backend; auto: tensorrt with a GPU, tensorrt and cuda-python, else onnxruntime "
                        "(on the shipped or given graph: no torch), else torch",
                BACKENDS, True),
    "device": ("auto", "torch device: auto, cpu, cuda, cuda:N", None, True),
    "precision": ("fp32", "network precision", PRECISIONS, True),
    "engine_cache_dir": ("~/.cache/bgprompt", "where exported ONNX graphs and TensorRT engines are cached", None, True),
    "onnx": ("", "an exported graph to use instead of exporting on first start", None, True),
    "segmentation": ("mask_topic", "where object masks come from", ("mask_topic", "rembg"), True),
    "rembg_model": ("u2net", "rembg model name (installed under U2NET_HOME) or .onnx path", None, True),
    "sync_mode": ("exact", "time synchronization of the inputs", ("exact", "approximate"), True),
    "sync_slop": (0.015, "approximate sync: max stamp span of a set in seconds; keep it under half the frame "
                         "period (16 ms at 30 Hz), or a lost message lets a frame pair with its neighbour's", None,
                  True),
    "sync_min_period": (0.0, "approximate sync: the shortest time between two messages of a topic (message_filters' "
                             "inter-message lower bound); 0.02 for a 30 Hz camera saves a frame of latency", None,
                        True),
    "queue_size": (10, "per-topic synchronizer queue and subscription depth", None, True),
    "scale": ("relative", "relative (up to scale), metric (metric networks) or align-to-sensor (RGB-D)",
              SCALES, True),
    "align": ("scale-shift", "align-to-sensor fit (scale-shift for disparity networks such as mini)",
              ALIGNS, True),
    "fusion": ("none", "align-to-sensor: none (the aligned prediction only) or fill (keep consistent sensor depth, "
                       "fill holes and see-through or outlying readings with the aligned prediction)",
               FUSIONS, True),
    "recenter": (False, "re-centre each object by a virtual camera before the network", None, True),
    "max_objects": (16, "objects per frame, the largest kept (one network batch; a TensorRT engine's profile covers "
                        "1..max_objects)", None, True),
    "max_depth": (0.0, "drop points farther than this (0: no limit)", None, False),
    # dense by default: grasp planners take object points; measured (make bench, 640x480, one object) the node's
    # p50 latency is 18 ms dense vs 30 ms organized, and the message ~40x smaller. organized keeps the pixel grid
    # (depth_image_proc's convention) for image-space consumers
    "cloud_mode": ("dense", "dense object points only (1 x N, grasp planners), or organized HxW with NaN "
                   "(depth_image_proc's layout)", ("organized", "dense"), False),
    "cloud_rgb": (True, "add an rgb field packed as in depth_image_proc", None, False),
    "cloud_labels": (True, "add label (uint32 object id) and source (uint8: 1 sensor, 2 predicted, 3 interpolated "
                           "from the sensor) fields", None, False),
    "mask_labels": (False, "read a mono8 mask's values as object ids (semantic segmenters' class ids); false: any "
                           "non-zero value is one object (16UC1 / 32SC1 masks are always labels)", None, False),
    "publish_composite": (True, "publish the composite debug image when someone subscribes", None, False),
    "sub_reliability": ("best_effort", "subscription reliability (sensor data QoS by default)",
                        ("best_effort", "reliable"), True),
    "pub_depth": (5, "publisher queue depth (reliable)", None, True),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages", None, True),
    "autostart": (True, "configure and activate at start (plain, unmanaged use)", None, False),
}
# RGB-D fusion (scale align-to-sensor): bgprompt_core.rgbd.fusion.FusionConfig field by field as fusion_<field>, the sensor
# noise included; defaults are what docs/grasp measures (config/object_depth_rgbd.yaml). Each value is checked by
# FusionConfig's own validation.
_FUSION = FusionConfig()
PARAMETERS.update({f"fusion_{n}": (getattr(_FUSION, n), FUSION_HELP[n], HOLE_FILLS if n == "hole_fill" else None, True)
                   for n in FUSION_FIELDS})


def _fusion_value_ok(field: str, value) -> bool:
    try:
        FusionConfig(**{field: value})
        return True
    except (TypeError, ValueError):  # ConfigError is a ValueError
        return False


FUSION_RULES = {f"fusion_{n}": (lambda v, n=n: _fusion_value_ok(n, v), "a valid FusionConfig value (see its "
                                                                      "description)") for n in FUSION_FIELDS}


# value rules beyond the allowed sets: name -> (check, what it must be)
RULES: dict[str, tuple] = {
    "sync_slop": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "max_depth": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0: no limit)"),
    "sync_min_period": (lambda v: math.isfinite(v) and v >= 0, "a finite number of seconds >= 0"),
    "diagnostics_period": (lambda v: math.isfinite(v) and v > 0, "a finite number of seconds > 0"),
    "queue_size": (lambda v: v >= 1, "an integer >= 1"),
    "max_objects": (lambda v: 1 <= v <= 256, "an integer in [1, 256]"),
    "pub_depth": (lambda v: v >= 1, "an integer >= 1"),
    **FUSION_RULES,
}


TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def coerce(name: str, value):
    """``value`` as parameter ``name``'s type where that loses nothing: a whole number for a decimal parameter
    (``max_depth: 2``, ``-p diagnostics_period:=1``) is that number; anything else is returned as it is."""
    default = PARAMETERS[name][0] if name in PARAMETERS else None
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def invalid(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` (None when it is): the one rule set for values
    given at start-up (params files, --ros-args -p) and values set while the node runs. The node declares its
    parameters dynamically typed, so a value of the wrong type (``device: 0``) is refused here, with the reason,
    instead of raising in the constructor."""
    if name not in PARAMETERS:
        return None
    want = type(PARAMETERS[name][0])
    value = coerce(name, value)
    if type(value) is not want:  # bool is not an int here
        return f"{name} must be {TYPE_WORDS[want]}, got {value!r} ({type(value).__name__})"
    allowed = PARAMETERS[name][2]
    if allowed and value not in allowed:
        return f"{name} must be one of {list(allowed)}, got {value!r}"
    if name in RULES and not RULES[name][0](value):
        return f"{name} must be {RULES[name][1]}, got {value!r}"
    return None


def estimator_config_from_params(params: dict) -> EstimatorConfig:
    p = {name: spec[0] for name, spec in PARAMETERS.items()} | params
    return EstimatorConfig(
        model=p["model"], prompt=p["prompt"], backend=p["backend"], onnx=p["onnx"] or None,
        cache_dir=p["engine_cache_dir"], device=p["device"], precision=p["precision"], scale=p["scale"],
        align=p["align"], fusion=p["fusion"], recenter=p["recenter"], segmentation="rembg" if p["segmentation"] == "rembg" else "none",
        rembg_model=p["rembg_model"], max_depth=p["max_depth"] or math.inf, max_objects=p["max_objects"],
        fusion_config=fusion_config_from_params(p))


def unknown_names(names) -> str | None:
    """Why ``names`` (parameters given to the node) are refused, when some are not its parameters (None when all
    are); ``use_sim_time`` and ``qos_overrides.*`` are rclpy's own."""
    unknown = sorted(n for n in set(names) - set(PARAMETERS) - {"use_sim_time"} if not n.startswith("qos_overrides."))
    if not unknown:
        return None
    return f"unknown parameters {unknown}: every parameter is in config/object_depth.yaml (`ros2 param list`)"


def read_params_file(path: str | Path, node_name: str = "object_depth") -> dict:
    """Parameters for ``node_name`` from a ROS 2 params YAML (``/**`` and node sections; node wins)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    out: dict = {}
    for key in ("/**", node_name, f"/{node_name}"):
        out.update((data.get(key) or {}).get("ros__parameters", {}))
    reason = unknown_names(out)
    if reason:
        raise ConfigError(f"{path}: {reason}")
    for name, value in out.items():
        reason = invalid(name, value)
        if reason:
            raise ConfigError(f"{path}: {reason}")
    return {name: coerce(name, value) for name, value in out.items()}
