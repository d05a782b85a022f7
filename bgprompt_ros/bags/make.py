"""``bgprompt bag make``: a real ROS 2 bag from a `bgprompt render` directory (without rosbag2_py).

Uses the pure-Python `rosbags` library (sqlite3 and mcap) through ``BagWriter`` (writer.py), which closes the
bag readable on a full disk.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bgprompt_core.messages.bag_frames import TOPICS, typestore
from bgprompt_core.method.config import ConfigError
from bgprompt_core.evaluation.sensor_model import to_millimetres

from .writer import BagWriter, DiskFull

FRAME = "camera_color_optical_frame"


def _header(ts, stamp_ns: int, frame: str):
    H = ts.types["std_msgs/msg/Header"]
    T = ts.types["builtin_interfaces/msg/Time"]
    return H(stamp=T(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame)


def image_message(ts, arr: np.ndarray, encoding: str, stamp_ns: int, frame: str = FRAME):
    Img = ts.types["sensor_msgs/msg/Image"]
    h, w = arr.shape[:2]
    data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return Img(header=_header(ts, stamp_ns, frame), height=h, width=w, encoding=encoding, is_bigendian=0,
               step=data.size // h, data=data)


def camera_info_message(ts, K: np.ndarray, h: int, w: int, stamp_ns: int, frame: str = FRAME):
    Info = ts.types["sensor_msgs/msg/CameraInfo"]
    Roi = ts.types["sensor_msgs/msg/RegionOfInterest"]
    P = np.zeros((3, 4))
    P[:, :3] = K
    return Info(header=_header(ts, stamp_ns, frame), height=h, width=w, distortion_model="plumb_bob",
                d=np.zeros(5), k=np.asarray(K, float).reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1),
                binning_x=0, binning_y=0, roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def sensor_depth_m(sample: dict, sensor: str, rng: np.random.Generator) -> np.ndarray:
    """An RGB-D camera's depth (float metres, 0 = no reading) for a rendered sample.

    Tabletop renders carry their sensor's depth (materials included): used when ``sensor`` is its preset, or
    "stored" (whatever its preset: harsh-stereo, tof-like); for other renders the sensor model
    (bgprompt_core.evaluation.sensor_model) runs here, with dark surfaces (luminance < 0.12) as its only material cue.
    """
    from bgprompt_core.evaluation import sensor_model as sm

    if sensor == "none":
        return sample["depth"].astype(np.float32)
    if sensor == "stored":
        if "sensor_depth" not in sample:
            raise ConfigError("--sensor stored needs renders with their own sensor depth (bgprompt render tabletop)")
        return sample["sensor_depth"]
    if "sensor_depth" in sample and sample.get("sensor") == sensor:
        return sample["sensor_depth"]
    lum = sample["rgb"].astype(np.float64).mean(-1) / 255.0
    material = np.where((lum < 0.12) & (sample["depth"] > 0), sm.DARK, sm.DIFFUSE).astype(np.uint8)
    return sm.simulate(sample["depth"], sample["K"], sm.preset(sensor), rng, material)


def iter_render_samples(data_dir: str | Path, limit: int | None = None):
    """Samples of a `bgprompt render` directory (manifest.json + npz shards, see its manifest's conventions).

    A minimal reader on purpose: the ROS layer must not depend on the offline training package.
    """
    root = Path(data_dir)
    manifest = json.loads((root / "manifest.json").read_text())
    sensor = manifest.get("generator", {}).get("sensor")
    n = 0
    for shard in manifest["shards"]:
        with np.load(root / shard["file"]) as f:
            arrays = {k: f[k] for k in ("rgb", "depth", "mask", "K", "instance", "alpha", "sensor_depth") if k in f}
        for j in range(shard["count"]):
            if limit is not None and n >= limit:
                return
            yield {**{k: v[j] for k, v in arrays.items()}, "sensor": sensor}
            n += 1


def make_bag(data_dir: str | Path, out: str | Path, storage: str = "mcap", rate: float = 10.0,
             sensor: str = "d435-like", seed: int = 0, limit: int | None = None) -> dict:
    """A real ROS 2 bag from a `bgprompt render` directory: colour, camera_info, mask, the RGB-D sensor's
    16UC1 depth in mm (``sensor``: a sensor_model preset, 'none' or 'stored': a tabletop render's own) and, for
    evaluation only, the ground-truth depth (32FC1 metres, NaN where there is no surface). Tabletop renders give
    16UC1 instance labels of every object as the mask; other renders a mono8 mask."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; bags are never overwritten")
    ts = typestore()
    rng = np.random.default_rng(seed)
    start = 1_700_000_000 * 10**9
    count = 0
    with BagWriter(out, storage) as writer:
        conns = {k: writer.add_connection(TOPICS[k], "sensor_msgs/msg/CameraInfo" if k == "camera_info"
                                          else "sensor_msgs/msg/Image", typestore=ts) for k in TOPICS}
        for i, s in enumerate(iter_render_samples(data_dir, limit)):
            stamp = start + int(i * 1e9 / rate)
            h, w = s["depth"].shape
            if "instance" in s and "alpha" in s and "sensor_depth" in s:  # tabletop: every object, by instance
                mask = image_message(ts, np.where(s["alpha"] > 0, s["instance"], 0).astype(np.uint16), "16UC1", stamp)
            else:
                mask = image_message(ts, s["mask"].astype(np.uint8) * 255, "mono8", stamp)
            truth = np.where(s["depth"] > 0, s["depth"], np.nan).astype(np.float32)
            msgs = {"image": image_message(ts, s["rgb"], "rgb8", stamp),
                    "camera_info": camera_info_message(ts, s["K"], h, w, stamp), "mask": mask,
                    "depth": image_message(ts, to_millimetres(sensor_depth_m(s, sensor, rng)), "16UC1", stamp),
                    "truth": image_message(ts, truth, "32FC1", stamp)}
            try:
                for k, msg in msgs.items():
                    writer.write(conns[k], stamp, ts.serialize_cdr(msg, msg.__msgtype__))
            except DiskFull as exc:
                raise DiskFull(f"{exc} ({exc.kept // len(TOPICS)} whole frames of {data_dir})", exc.kept) from None
            count += 1
    if count == 0:
        raise ConfigError(f"{data_dir}: no samples")
    return {"frames": count, "topics": TOPICS, "storage": storage, "path": str(out)}
