"""The object-depth node's output messages from one estimated frame: depth image, camera_info, cloud, composite
preview, markers.

Message classes are passed in (as in conversions.py), so that ``bag eval`` builds the same cloud from rosbags'
types without rclpy; buffers go into the messages without a copy (conversions.py).
"""
from __future__ import annotations

import numpy as np

from bgprompt_core.frame.object_summary import summarize_objects

from . import conversions
from .markers import object_markers


def depth_image(Image, header, res):
    """object_depth/image: the result's depth (32FC1, NaN where there is none) under the input's header."""
    return conversions.depth_image_message(Image, header, res.depth)


def camera_info(CameraInfo, header, info, shape: tuple[int, ...]):
    """object_depth/camera_info: the input's calibration under its header (its size, or the image's when unset)."""
    return CameraInfo(header=header, height=info.height or shape[0], width=info.width or shape[1],
                      distortion_model=info.distortion_model, d=info.d, k=info.k, r=info.r, p=info.p,
                      binning_x=info.binning_x, binning_y=info.binning_y, roi=info.roi)


def object_cloud(PointCloud2, PointField, header, res, rgb: np.ndarray, *, with_rgb: bool, organized: bool,
                 labels: bool):
    """object_points: the result's points, with colour (``with_rgb``), organized HxW or dense, and per point its
    object id and depth source (``labels``): the node's parameters cloud_rgb, cloud_mode and cloud_labels."""
    return conversions.cloud_message(PointCloud2, PointField, header, res.depth, res.K, rgb if with_rgb else None,
                                     organized=organized, label=res.instance if labels else None,
                                     source=res.source if labels else None)


def composite_image(Image, header, comp: np.ndarray):
    """composite: the preview of the object on its prompt (rgb8)."""
    return Image(header=header, height=comp.shape[0], width=comp.shape[1], encoding="rgb8", is_bigendian=0,
                 step=comp.shape[1] * 3, data=comp.tobytes())


def marker_array(header, res):
    """object_markers: each object's oriented box, centroid and label (metric results only: boxes need metres)."""
    summaries = summarize_objects(res.depth, res.instance, res.K, res.object_ids, res.source)
    return object_markers(summaries, header, res.units)
