"""The allowed values of every enumerated setting, one tuple each (issue 30: they were listed 3-4 times).

``EstimatorConfig``, the checkpoint and graph readers, the TensorRT builder and rgbd/ check against these; the
ROS node's parameters and the CLIs' ``choices`` name the same values. Imports nothing.
"""
from __future__ import annotations

# the estimator (EstimatorConfig; the node's parameters of the same names)
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")  # inference backends; auto: runtime.build.resolve_backend
PRECISIONS = ("fp32", "fp16")
SCALES = ("relative", "metric", "align-to-sensor")
ALIGNS = ("scale", "scale-shift")  # the align-to-sensor fit (rgbd.alignment)
FUSIONS = ("none", "fill")  # align-to-sensor: the prediction alone, or the sensor's readings with holes filled
UPSAMPLINGS = ("joint-bilateral", "bilinear")  # bilinear: the upsampling before issue 29, for comparison
SEGMENTATIONS = ("none", "rembg")

# the method
COMPOSITES = ("replace", "additive")  # Eq. 1, and the "Additive" ablation (Table 3)
OUTPUT_KINDS = ("relative_disparity", "relative_depth", "metric_depth")  # what a depth network predicts
# prompts shipped with a model, by name ("default": a deprecated "1bg"); "none" (white) and paths are the others
SHIPPED_PROMPT_NAMES = ("default", "1bg", "pnet", "tabletop")

# rembg sessions that read one local file, <name>.onnx, and run on this machine. Others are refused: `sam` needs
# an encoder and a decoder, the *_custom ones take a path (give the .onnx path instead), and `withoutbg` /
# `atlascloud` send every image to a paid web service.
REMBG_OFFLINE_MODELS = ("u2net", "u2netp", "u2net_human_seg", "u2net_cloth_seg", "silueta", "isnet-general-use",
                        "isnet-anime", "bria-rmbg", "birefnet-general", "birefnet-general-lite",
                        "birefnet-general-fp16", "birefnet-portrait", "birefnet-dis", "birefnet-hrsod",
                        "birefnet-cod", "birefnet-massive")
