"""The command line object_depth.launch.py gives (through the launch stand-in, test/launch_standin) starts the node
with the launch arguments in force: namespace, output and input remaps, use_sim_time, the Fast DDS profile."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.srv import GetParameters  # noqa: E402

from bgprompt_ros.readiness import NotReady, wait_for_nodes  # noqa: E402
from test_package import PROFILE_VARS, _launch, ament_prefix  # noqa: E402,F401 (a fixture)


def test_the_launched_command_line_runs_the_node_as_the_arguments_say(ament_prefix, tmp_path):
    prefix = ament_prefix
    (node,) = _launch(prefix, "object_depth.launch.py", namespace="robot1", use_sim_time="true",
                      image="/cam/color/image_raw", depth="/objects/depth/image",
                      depth_camera_info="/objects/depth/camera_info")
    log = tmp_path / "node.log"
    proc = subprocess.Popen(node.cmd, env={**os.environ, **node.env, "ROS_LOG_DIR": str(tmp_path / "ros")},
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    if not rclpy.ok():
        rclpy.init()
    client = rclpy.create_node("bgprompt_launch_client")
    try:
        try:
            wait_for_nodes(client, ["/robot1/object_depth"], 120)
        except NotReady as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-3000:]}")
        want = {"/objects/depth/image", "/objects/depth/camera_info", "/robot1/object_points", "/robot1/object_depth"}
        deadline = time.monotonic() + 30  # the graph shows the node's endpoints as discovery reaches them
        pubs: dict = {}
        while not want <= set(pubs) and time.monotonic() < deadline:
            rclpy.spin_once(client, timeout_sec=0.1)
            pubs = dict(client.get_publisher_names_and_types_by_node("object_depth", "/robot1"))
        subs = dict(client.get_subscriber_names_and_types_by_node("object_depth", "/robot1"))
        assert want <= set(pubs), sorted(pubs)
        assert pubs["/objects/depth/image"] == ["sensor_msgs/msg/Image"]
        assert pubs["/objects/depth/camera_info"] == ["sensor_msgs/msg/CameraInfo"]
        assert "/robot1/object_points" in pubs and "/robot1/object_depth" in pubs  # the rest: namespaced defaults
        assert "/cam/color/image_raw" in subs and "/robot1/mask" in subs
        get = client.create_client(GetParameters, "/robot1/object_depth/get_parameters")
        assert get.wait_for_service(timeout_sec=30)
        future = get.call_async(GetParameters.Request(names=["use_sim_time", "autostart"]))
        deadline = time.monotonic() + 30
        while not future.done() and time.monotonic() < deadline:
            rclpy.spin_once(client, timeout_sec=0.1)
        assert [v.bool_value for v in future.result().values] == [True, True]
        env = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        profile = str(prefix / "share/bgprompt_ros/config/fastdds_large_messages.xml")
        assert all(f"{var}={profile}".encode() in env for var in PROFILE_VARS)
    finally:
        client.destroy_node()
        rclpy.try_shutdown()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
