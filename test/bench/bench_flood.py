"""Run by bench.py in its own process: a 30 Hz flood of 640x480 frames into object_depth_node under its DEFAULT
parameters and sensor-data (best-effort) publishers, as a camera driver publishes, with and without the Fast DDS
profile that the launch file applies (config/fastdds_large_messages.xml).

Prints one line per case: frames published, served, dropped by the node (latest-only: counted), lost before
the node (what its `received` counters did not see) and whether /diagnostics named the loss. Goal (issue 23):
no frame lost at 640x480, or the loss shows in the diagnostics.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def flood(frames: int, profile: bool) -> str:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from bgprompt_ros.readiness import wait_for_nodes

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("FASTRTPS_DEFAULT_PROFILES_FILE",
                                                            "FASTDDS_DEFAULT_PROFILES_FILE")}
    if profile:  # what the launch file gives the node (and the camera driver should use too)
        for var in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
            env[var] = str(root / "config" / "fastdds_large_messages.xml")
    os.environ.clear()
    os.environ.update(env)
    tmp = Path(tempfile.mkdtemp())
    proc = subprocess.Popen([str(Path(sys.executable).parent / "object_depth_node")],  # default parameters
                            env={**env, "ROS_LOG_DIR": str(tmp)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node("bgprompt_flood_client")
    served: set[int] = set()
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    depth_sub = node.create_subscription(Image, "object_depth/image", lambda m: served.add(
        m.header.stamp.sec * 10**9 + m.header.stamp.nanosec), reliable)
    diag: list = []
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diag.extend(
        st for st in m.status if st.name.startswith("object_depth")), 10)
    pubs = {t: node.create_publisher(CameraInfo if t == "camera_info" else Image, t, qos_profile_sensor_data)
            for t in ("image", "camera_info", "mask")}
    h, w = 480, 640
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8).tobytes()
    mask = np.zeros((h, w), np.uint8)
    mask[140:340, 220:420] = 255
    mask = mask.tobytes()
    K = [520.0, 0.0, 319.5, 0.0, 520.0, 239.5, 0.0, 0.0, 1.0]
    wait_for_nodes(node, ["object_depth"], 180, publishers=pubs, subscriptions={"object_depth/image": depth_sub})
    stamps = []
    for k in range(frames):
        stamp = time.time_ns()
        for t, msg in (("mask", Image(height=h, width=w, encoding="mono8", step=w, data=mask)),
                       ("camera_info", CameraInfo(width=w, height=h, k=K)),
                       ("image", Image(height=h, width=w, encoding="rgb8", step=3 * w, data=img))):
            msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = stamp // 10**9, stamp % 10**9, "cam"
            pubs[t].publish(msg)
        stamps.append(stamp)
        end = time.perf_counter() + 1 / 30
        while time.perf_counter() < end:
            rclpy.spin_once(node, timeout_sec=0.002)
    seen, end = len(diag), time.time() + 5  # the node's verdict: two diagnostics after the flood
    while time.time() < end and len(diag) < seen + 2:
        rclpy.spin_once(node, timeout_sec=0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    node.destroy_node()
    rclpy.try_shutdown()
    last = {kv.key: kv.value for kv in diag[-1].values} if diag else {}
    received = dict(kv.split("=") for kv in last.get("received", "").split(", ") if "=" in kv)
    unpaired = dict(kv.split("=") for kv in last.get("unpaired", "").split(", ") if "=" in kv)
    named = [st.message for st in diag if "lost" in st.message or "dropped" in st.message]
    got = len(served & set(stamps))
    image_in, dropped = int(received.get("image", 0)), int(last.get("dropped_overload", 0))
    # every frame not served is accounted for: superseded in the node (the dropped_overload counter) or lost before
    # it: counted per missing input (the unpaired value) and named in the diagnostics' message ("inputs lost on
    # the way")
    accounted = frames - got <= dropped + (sum(int(v) for v in unpaired.values()) if named else 0)
    return (f"30 Hz flood, 640x480 rgb8, default parameters, {'with' if profile else 'without'} the Fast DDS profile: "
            f"{frames} published, {got} served, {dropped} superseded in the node (latest-only: dropped_overload), "
            f"{frames - image_in} images lost before the node (received {received or '?'}; unpaired "
            f"{unpaired or '?'}); named in /diagnostics: "
            f"{'yes: ' + named[-1][:90] + '...' if named else 'no'}; every lost frame accounted for in /diagnostics "
            f"(goal): {'met' if accounted else 'NOT met'}")


if __name__ == "__main__":
    print(flood(int(sys.argv[1]) if len(sys.argv) > 1 else 90, len(sys.argv) > 2 and sys.argv[2] == "profile"))
