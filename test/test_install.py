"""Installs as users make them, each in a fresh environment, with the node run from it on a real frame:

- the torch-free robot venv: `pip install ".[robot,ros]"`, no torch / transformers / scipy, the shipped graph;
- an apt-ROS-like system (rclpy in a /opt/ros-like prefix reached through its setup.bash), a venv with
  --system-site-packages over it, pip for what has no apt package, colcon build, `source install/setup.bash`,
  the node run from the install space: docs/DEPLOYMENT.md's steps, read from the document itself.

~1 min each once the wheels are in the wheelhouse (`make wheelhouse`: ~3 min the first time on a machine).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from install_envs import (BASE_PYTHON, FORBIDDEN, ROOT, WHEELHOUSE, apt_like_system, clean_env, importable,
                          requirement_lines, robot_venv)
from scenes import box_on_table, table_image

pytestmark = [pytest.mark.ros, pytest.mark.slow]
rclpy = pytest.importorskip("rclpy")

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator  # noqa: E402
from bgprompt_ros.readiness import NotReady, wait_for_nodes  # noqa: E402

H, W = 480, 640
K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
PROFILE = str(ROOT / "config" / "fastdds_large_messages.xml")


def camera_frame():
    """A 640x480 RGB frame of a see-through box on a checkered table, and its mask (mono8 0/255)."""
    _, table, box = box_on_table(K, H, W)
    return table_image(K, H, W, table, box, glass=True), box.astype(np.uint8) * 255


def sibling_info_topic(image_topic: str) -> str:
    """image_transport's getCameraInfoTopic: the camera_info beside an image topic (same namespace)."""
    return image_topic[:image_topic.rfind("/") + 1] + "camera_info"


def _msg(cls, arr, encoding, stamp):
    h, w = arr.shape[:2]
    m = cls(height=h, width=w, encoding=encoding, is_bigendian=0, step=arr[0].nbytes, data=arr.tobytes())
    m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id = stamp // 10**9, stamp % 10**9, "cam_optical"
    return m


def one_frame_through(cmd: list[str], env: dict, log: Path, timeout: float = 180) -> dict:
    """Start the node with ``cmd``, send one frame once it is ready, return what it published
    ({topic: message}) on object_depth/image, its sibling camera_info and the deprecated object_depth."""
    os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = PROFILE  # this client too: 640x480 messages
    proc = subprocess.Popen(cmd, env={**env, "FASTRTPS_DEFAULT_PROFILES_FILE": PROFILE}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    if not rclpy.ok():
        rclpy.init()
    node = rclpy.create_node("bgprompt_install_client")
    rel = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    got: dict = {}
    topics = {"/object_depth/image": Image, sibling_info_topic("/object_depth/image"): CameraInfo,
              "/object_depth": Image}
    subs = {t: node.create_subscription(c, t, lambda m, t=t: got.setdefault(t, m), rel) for t, c in topics.items()}
    pubs = {t: node.create_publisher(CameraInfo if t == "camera_info" else Image, t, rel)
            for t in ("image", "camera_info", "mask")}
    try:
        try:
            wait_for_nodes(node, ["object_depth"], timeout, publishers=pubs, subscriptions=subs)
        except NotReady as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-4000:]}")
        img, mask = camera_frame()
        stamp = time.time_ns()
        info = CameraInfo(width=W, height=H, k=K.ravel().tolist(), distortion_model="plumb_bob", d=[0.0] * 5,
                          p=[K[0, 0], 0.0, K[0, 2], 0.0, 0.0, K[1, 1], K[1, 2], 0.0, 0.0, 0.0, 1.0, 0.0])
        info.header = _msg(Image, mask, "mono8", stamp).header  # the frame's stamp and frame_id
        pubs["image"].publish(_msg(Image, img, "rgb8", stamp))
        pubs["mask"].publish(_msg(Image, mask, "mono8", stamp))
        pubs["camera_info"].publish(info)
        deadline = time.monotonic() + 60
        while len(got) < len(topics) and time.monotonic() < deadline and proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.05)
        assert len(got) == len(topics), f"received {sorted(got)}\n{log.read_text()[-4000:]}"
        graph = dict(node.get_publisher_names_and_types_by_node("object_depth", "/"))
        return {"stamp": stamp, "got": got, "published": graph}
    finally:
        node.destroy_node()
        rclpy.try_shutdown()  # later tests init their own context
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def check_depth(run: dict, log: Path) -> None:
    """Conventional outputs, and the depth of the torch pipeline (this process, backend torch) on the same frame."""
    got, stamp = run["got"], run["stamp"]
    depth_msg, info, legacy = got["/object_depth/image"], got["/object_depth/camera_info"], got["/object_depth"]
    assert run["published"]["/object_depth/image"] == ["sensor_msgs/msg/Image"]
    assert run["published"]["/object_depth/camera_info"] == ["sensor_msgs/msg/CameraInfo"]
    for m in (depth_msg, info, legacy):
        assert m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamp and m.header.frame_id == "cam_optical"
    assert depth_msg.encoding == "32FC1" and (depth_msg.height, depth_msg.width) == (H, W) == (info.height, info.width)
    assert bytes(legacy.data) == bytes(depth_msg.data)  # the deprecated name carries the same image
    assert "/object_depth is deprecated" in log.read_text()
    depth = np.frombuffer(bytes(depth_msg.data), np.float32).reshape(H, W)
    img, mask = camera_frame()
    want = ObjectDepthEstimator(EstimatorConfig(model="mini", backend="torch")).estimate(img, K, mask // 255).depth
    ok = np.isfinite(want)
    assert np.array_equal(np.isfinite(depth), ok) and ok[mask > 0].mean() > 0.8
    assert np.abs(depth[ok] - want[ok]).max() <= 1e-4 * np.ptp(want[ok])


@pytest.fixture(scope="module")
def robot_python(tmp_path_factory):
    return robot_venv(tmp_path_factory.mktemp("robot") / "venv")


def test_the_robot_extra_runs_the_node_on_the_shipped_graph_without_torch(robot_python, tmp_path):
    venv = robot_python.parent.parent
    assert importable(robot_python, FORBIDDEN + ("onnxruntime", "rclpy", "cv2")) == ["onnxruntime", "rclpy", "cv2"]
    env = clean_env(ROS_LOG_DIR=str(tmp_path / "log"), HOME=str(tmp_path))  # no cache of a previous run
    log = tmp_path / "node.log"
    run = one_frame_through([str(venv / "bin" / "object_depth_node"), "--ros-args", "-p", "sub_reliability:=reliable"],
                            env, log)
    check_depth(run, log)  # the torch model's depth, in a venv that cannot import torch
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "bgprompt_core" / "graphs" / "mini-1bg.onnx").is_file()  # shipped in the installed package
    assert not (tmp_path / ".cache" / "bgprompt").exists()  # nothing was exported: the shipped graph ran


def deployment_steps() -> list[tuple[str, str]]:
    """(command, mark) of docs/DEPLOYMENT.md's apt install block: every line ends in `# [tested]` or
    `# [not run here: why]`."""
    text = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    block = re.search(r"<!-- apt-install-steps -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "docs/DEPLOYMENT.md lost its apt install block"
    steps = []
    for line in block.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cmd, _, mark = line.partition("# [")
        assert mark, f"step without a [tested] / [not run here] mark: {line}"
        steps.append((cmd.strip(), mark.rstrip("]").strip()))
    return steps


def test_deployment_marks_every_apt_step_tested_or_not_run():
    steps = deployment_steps()
    assert {m.split(":")[0] for _, m in steps} <= {"tested", "not run here"}
    tested = [c for c, m in steps if m == "tested"]
    for needed in ("python3 -m venv --system-site-packages", "colcon build", "source install/setup.bash"):
        assert any(needed in c for c in tested), needed
    assert any(c.startswith("ros2 launch") for c, m in steps if m.startswith("not run here"))
    # the pip step names the pins of requirements/ (one source of versions), and never numpy or OpenCV: apt's
    # are the ones the apt ROS packages were built against
    pins = set(requirement_lines("robot", "ros", "core", "runtime"))
    pip = [c for c, m in steps if c.startswith("pip install")]
    assert pip and all(arg in pins for c in pip for arg in c.split()[2:] if "==" in arg), pip
    assert not any(name in c for c in pip for name in ("numpy", "opencv"))


def test_apt_like_install_builds_a_workspace_the_node_runs_from(tmp_path):
    """docs/DEPLOYMENT.md's [tested] steps, run by bash with /opt/ros/jazzy -> the stand-in prefix and the
    clone -> a link to this checkout."""
    system = tmp_path / "opt_ros_jazzy"
    apt_like_system(system)
    ws = tmp_path / "ros2_ws"
    # python3 is the base interpreter (the stand-in for /usr/bin/python3); pip reads the wheelhouse only
    script = ["set -eo pipefail", f"export PATH={Path(BASE_PYTHON).parent}:$PATH",
              f"export PIP_NO_INDEX=1 PIP_FIND_LINKS={WHEELHOUSE}"]
    for cmd, mark in deployment_steps():
        if mark != "tested":
            continue
        cmd = cmd.replace("/opt/ros/jazzy/setup.bash", str(system / "setup.bash")).replace("~/ros2_ws", str(ws))
        if cmd.startswith("git clone"):
            cmd = f"ln -s {ROOT} src/bgprompt_ros"
        script.append(cmd)
    script.append("echo SHEBANG=$(head -1 install/bgprompt_ros/lib/bgprompt_ros/object_depth_node)")
    script.append("env > " + str(tmp_path / "env.txt"))
    out = subprocess.run(["bash", "-c", "\n".join(script)], env=clean_env(HOME=str(tmp_path)), capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    venv = ws / "venv"
    # setup.cfg's build_scripts: the active venv's python runs the node (colcon's own would be the system's)
    assert "SHEBANG=#!/usr/bin/env python3\n" in out.stdout, out.stdout[-2000:]
    # what `source install/setup.bash` (with the venv active) leaves for `ros2 launch` / `ros2 run` to start the node
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line)
    assert str(ws / "install" / "bgprompt_ros") in env["AMENT_PREFIX_PATH"]
    # apt's rclpy (the prefix) and the venv's pip packages, no torch: the robot default
    assert importable(venv / "bin" / "python", FORBIDDEN[:2] + ("rclpy", "onnxruntime"), env=env) == \
        ["rclpy", "onnxruntime"]
    env["ROS_LOG_DIR"] = str(tmp_path / "log")
    log = tmp_path / "node.log"
    exe = ws / "install" / "bgprompt_ros" / "lib" / "bgprompt_ros" / "object_depth_node"
    run = one_frame_through([str(exe), "--ros-args", "-p", "sub_reliability:=reliable"], env, log)
    check_depth(run, log)
    assert not (tmp_path / ".cache" / "bgprompt").exists()  # the shipped graph of the install space ran

