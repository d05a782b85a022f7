"""``bgprompt eval-grasp``: object clouds in metres from imperfect RGB-D sensors, by material.

On `bgprompt render tabletop` frames (ground truth beside what a simulated sensor reads), for every object that
is whole in the frame, each method's object cloud is scored against the ground-truth surface
(``bgprompt_core.evaluation.cloud_metrics``), for each sensor preset (``--sensor``; a stored frame is re-simulated for any
preset, ``tabletop.resimulate``) and each data set (procedural shapes, real meshes). Methods:

- ``raw sensor``: the sensor's valid readings on the object's mask (what a robot uses today);
- ``inpaint telea`` / ``inpaint ns``: every hole of the sensor's depth image filled by ``cv2.inpaint`` in whole
  millimetres (``fusion.inpaint_mm``: OpenCV 5.0's Telea is wrong on float metres, opencv#25404), then cropped
  by the object's mask: the cheap baseline of grasping code;
- ``<prompt> + fusion``: the prompt's relative prediction fused with the sensor exactly as the node does with
  the settings of the params file (``config/object_depth_rgbd.yaml``: align, recenter, fusion_*), the noise
  terms set to each preset's (a user sets them to their camera's); one row per prompt (``white``: no prompt);
- ``<prompt> + fusion, fill: prediction``: the same with every hole filled from the prediction (the fill before
  issue 24), to measure the hybrid fill against it;
- ``oracle (<prompt>)``: that prompt's relative prediction with scale and shift fitted to the GROUND TRUTH on
  the object, which separates shape error from scale error.

Reported per (set, sensor, material, method): median AND mean over objects, the share of objects with no cloud
(and of those with sensor readings yet no cloud), and the goals' ratios with paired bootstrap 95% intervals.
The package: config.py (settings, method names), evaluate.py (the per-object rows), report.py (summary, goals,
summary.md, results.json), figures.py. Its old path ``bgprompt_training.grasp_eval`` still imports (_moved.py).
"""
from __future__ import annotations

from .config import (DEFAULT_PARAMS, MAX_QUERIES, PREDICTION_FILL, SUMMARY, GraspEvalConfig, _prompt_name,
                     fused_name, read_node_params)
from .evaluate import (_Methods, _points, _sensor_of, consistent_readings, evaluate_grasp, frame_objects,
                       merge_results)
from .figures import chamfer_chart, cloud_figure
from .report import (_clean, _empty, _fmt, _json_default, _paired, goal_lines, goals, markdown, ratio_interval,
                     summarize, write_report, write_results_json)

__all__ = ["DEFAULT_PARAMS", "MAX_QUERIES", "PREDICTION_FILL", "SUMMARY", "GraspEvalConfig", "chamfer_chart",
           "cloud_figure", "consistent_readings", "evaluate_grasp", "frame_objects", "fused_name", "goal_lines",
           "goals", "markdown", "merge_results", "ratio_interval", "read_node_params", "summarize", "write_report",
           "write_results_json"]
