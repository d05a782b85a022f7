"""sensor_msgs -> numpy decoding without cv_bridge (ROS-free): images, masks, RGB-D depth, camera_info.

cv_bridge does not install on our machines and breaks under NumPy 2 on many robots, so this module does
what it does, byte-compatible with it and with depth_image_proc: rgb8, bgr8, rgba8, bgra8, mono8, mono16,
16UC1, 32SC1, 32FC1, honouring ``step`` padding and ``is_bigendian``; zero-copy views where the layout
allows. The functions take plain values or duck-typed messages, so they work with rclpy messages and with
rosbags' classes alike: the node, `bag eval` and training from bags decode frames with the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bgprompt_core.errors import ConversionError

ENCODINGS = {  # encoding -> (dtype, channels)
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
    "32SC1": (np.int32, 1), "32FC1": (np.float32, 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")



def image_to_array(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data) -> np.ndarray:
    """Decode sensor_msgs/Image fields to an (H, W) or (H, W, C) array (a view when possible)."""
    if encoding not in ENCODINGS:
        raise ConversionError(f"unsupported image encoding {encoding!r}; expected one of {sorted(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    itemsize = np.dtype(dtype).itemsize
    row = width * channels * itemsize
    if height <= 0 or width <= 0:
        raise ConversionError(f"image has no pixels ({width}x{height})")
    if step < row:
        raise ConversionError(f"step {step} is smaller than a row of {width} x {encoding} ({row} bytes)")
    buf = memoryview(data).cast("B") if not isinstance(data, np.ndarray) else data.view(np.uint8).reshape(-1)
    if len(buf) < step * (height - 1) + row:
        raise ConversionError(f"data has {len(buf)} bytes, {encoding} {width}x{height} with step {step} needs "
                              f"{step * (height - 1) + row}")
    raw = np.frombuffer(buf, np.uint8, count=step * (height - 1) + row)
    if step != row:  # drop the row padding (one copy); otherwise a zero-copy view
        raw = np.lib.stride_tricks.as_strided(raw, shape=(height, row), strides=(step, 1)).copy().reshape(-1)
    wire = np.dtype(dtype).newbyteorder(">" if is_bigendian else "<")
    arr = raw.view(wire).reshape((height, width, channels) if channels > 1 else (height, width))
    return arr if wire == np.dtype(dtype) or itemsize == 1 else arr.astype(dtype)


def to_rgb(encoding: str, arr: np.ndarray) -> np.ndarray:
    """Any colour encoding -> contiguous (H, W, 3) uint8 RGB."""
    if encoding == "rgb8":
        return np.ascontiguousarray(arr)
    if encoding == "bgr8":
        return np.ascontiguousarray(arr[..., ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(arr[..., :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(arr[..., 2::-1])
    if encoding in ("mono8", "8UC1"):
        return np.repeat(arr[..., None], 3, axis=2)
    raise ConversionError(f"{encoding!r} is not a colour encoding; expected one of {COLOR_ENCODINGS}")


def to_mask(encoding: str, arr: np.ndarray, labels: bool = False) -> np.ndarray:
    """mono8 0/255 or 0/1 -> bool (``labels``: its values are object ids, as semantic segmenters publish them,
    -> uint16 labels); 16UC1 / 32SC1 -> instance labels (uint16 / int32)."""
    if encoding in ("mono8", "8UC1"):
        return arr.astype(np.uint16) if labels else arr > 0
    if encoding in ("16UC1", "mono16", "32SC1"):
        return np.ascontiguousarray(arr)
    raise ConversionError(f"mask encoding {encoding!r} not supported: use mono8 (binary) or 16UC1/32SC1 (labels)")


def to_sensor_depth(encoding: str, arr: np.ndarray) -> np.ndarray:
    """RGB-D depth -> float32 metres with NaN for no measurement (16UC1 millimetres 0 = invalid; 32FC1 m)."""
    if encoding in ("16UC1", "mono16"):
        out = arr.astype(np.float32) * np.float32(0.001)
        out[arr == 0] = np.nan
        return out
    if encoding == "32FC1":
        out = np.array(arr, np.float32, copy=True)
        out[~np.isfinite(out) | (out <= 0)] = np.nan
        return out
    raise ConversionError(f"depth encoding {encoding!r} not supported: use 16UC1 (mm) or 32FC1 (m)")


def camera_matrix(k: list | np.ndarray, width: int, height: int, image_shape: tuple[int, int],
                  p: list | np.ndarray | None = None) -> np.ndarray:
    """The 3x3 intrinsics of the image, validated against it.

    Like depth_image_proc (image_geometry's PinholeCameraModel), the projection matrix P describes the
    rectified image the node expects, so its left 3x3 is used when P is set; K (the raw camera's) otherwise.
    """
    P = np.asarray(p if p is not None else np.zeros(12), np.float64).reshape(3, 4)
    K = P[:, :3].copy() if P[0, 0] != 0 else np.asarray(k, np.float64).reshape(3, 3)
    if not np.isfinite(K).all():
        raise ConversionError("camera_info K contains NaN or inf")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(f"camera_info K has non-positive focal lengths (fx={K[0, 0]}, fy={K[1, 1]}); "
                              "is the camera calibrated?")
    h, w = image_shape
    # a field of view between 0.1 and 179 degrees: fx = w / (2 tan(fov / 2)); outside it the back-projection
    # overflows (fx = 1e-300 gave clouds of inf) or the camera_info is for another unit or image
    for f, side, axis in ((K[0, 0], w, "fx"), (K[1, 1], h, "fy")):
        if not side / (2 * np.tan(np.radians(89.5))) <= f <= side / (2 * np.tan(np.radians(0.05))):
            raise ConversionError(f"camera_info {axis}={f:g} px is implausible for a {w}x{h} image (a field of view "
                                  f"outside 0.1-179 degrees); is the camera calibrated, for this resolution?")
    if not (abs(K[0, 1]) <= K[0, 0] and K[2, 2] == 1 and K[2, 0] == 0 and K[2, 1] == 0):
        raise ConversionError(f"camera_info K {K.round(3).tolist()} is not a pinhole camera matrix (a skew beyond "
                              f"fx, or a last row other than [0, 0, 1])")
    if (width, height) != (0, 0) and (width, height) != (w, h):
        raise ConversionError(f"camera_info is for {width}x{height}, the image is {w}x{h}")
    return K


MAX_PIXELS = 4096 * 4096


@dataclass
class DecodedFrame:
    """One synchronized set of inputs, decoded: what the node and `bag eval` both hand to the estimator."""

    rgb: np.ndarray  # (H, W, 3) uint8
    K: np.ndarray  # 3x3 of the (rectified) image
    mask: np.ndarray | None
    sensor: np.ndarray | None  # float32 metres, NaN = no reading
    truth: np.ndarray | None  # float32 metres (bags with ground truth)
    distortion: str | None  # a warning when camera_info has distortion
    mask_note: str | None = None  # a warning when a mono8 mask's values look like object ids (mask_values_note)

    def size_problem(self) -> str | None:
        """Why the mask, depth or truth cannot be compared with the image (another size), or None."""
        h, w = self.rgb.shape[:2]
        for name, a in (("mask", self.mask), ("depth", self.sensor), ("ground truth", self.truth)):
            if a is not None and a.shape[:2] != (h, w):
                return f"{name} is {a.shape[1]}x{a.shape[0]}, the image is {w}x{h}"
        return None


Frame = DecodedFrame  # its name before issue 30 (bgprompt_ros.conversions hands it out); training's render.Frame is
# a rendered view, another thing


def _decode_image(msg) -> np.ndarray:
    return image_to_array(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)


def decode_frame(msgs: dict, sensor_key: str = "sensor_depth", mask_labels: bool = False) -> DecodedFrame:
    """Decode rclpy or rosbags messages {image, camera_info[, mask][, sensor_key][, truth]} with the node's checks:
    a colour encoding, at most 4096x4096 pixels (checked before anything is decoded), camera_info that fits the
    image. Raises ConversionError with the reason."""
    img = msgs["image"]
    if img.encoding not in COLOR_ENCODINGS:
        raise ConversionError(f"image encoding {img.encoding!r} is not a colour encoding {list(COLOR_ENCODINGS)}")
    if img.height * img.width > MAX_PIXELS:
        raise ConversionError(f"image of {img.width}x{img.height} exceeds 4096x4096")
    rgb = to_rgb(img.encoding, _decode_image(img))
    info = msgs["camera_info"]
    K = camera_matrix(info.k, info.width, info.height, rgb.shape[:2], info.p)
    mask, mask_note = None, None
    if "mask" in msgs:
        raw = _decode_image(msgs["mask"])
        mask = to_mask(msgs["mask"].encoding, raw, mask_labels)
        if msgs["mask"].encoding in ("mono8", "8UC1") and not mask_labels:
            mask_note = mask_values_note(raw)
    depth = {key: to_sensor_depth(msgs[key].encoding, _decode_image(msgs[key]))
             for key in (sensor_key, "truth") if key in msgs}
    return DecodedFrame(rgb, K, mask, depth.get(sensor_key), depth.get("truth"),
                 distortion_note(info.distortion_model, info.d), mask_note)


def mask_values_note(arr: np.ndarray) -> str | None:
    """A warning for a binary-read mono8 mask whose non-zero values look like object ids (2 to 32 distinct values,
    none 255): they are merged into one object unless the mask is read as labels."""
    if arr.size and arr.max() == 255:  # the usual 0/255 binary mask: never ids (a 0.02 ms pass, not a 0.4 ms bincount)
        return None
    counts = np.bincount(arr.reshape(-1), minlength=256)
    values = np.flatnonzero(counts[1:]) + 1
    if not 2 <= values.size <= 32 or counts[255]:
        return None
    return (f"the mono8 mask holds the values {values.tolist()}: read as one object (any non-zero value); if they "
            f"are object ids, set mask_labels: true (or publish 16UC1 instance labels)")


def distortion_note(distortion_model: str, d) -> str | None:
    """A warning for camera_info with non-zero distortion: depth and clouds assume a rectified image."""
    d = np.asarray(d if d is not None else [], np.float64)
    if not d.size or not np.any(d != 0):
        return None
    return (f"camera_info has non-zero distortion ({distortion_model or 'unknown model'}, D={d.round(4).tolist()}): "
            f"like depth_image_proc, object_depth assumes a rectified image and uses P; subscribe to image_rect "
            f"(image_proc) or the points will be off towards the image borders")
