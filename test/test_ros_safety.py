"""The loopback-only ROS environment every rclpy process of this test suite runs under."""
import os
import socket
import subprocess
import sys

import pytest

CHILD = r"""
import os, rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("bgprompt_safety_probe")
got = []
sub = node.create_subscription(String, "probe", lambda m: got.append(m.data), 10)
pub = node.create_publisher(String, "probe", 10)
for _ in range(50):
    pub.publish(String(data="hello"))
    rclpy.spin_once(node, timeout_sec=0.05)
    if got:
        break
print(os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"], got[:1])
node.destroy_node()
rclpy.shutdown()
"""


def _interfaces() -> list[str]:
    """Interfaces of THIS network namespace (netlink; /sys/class/net shows the mount's namespace)."""
    return sorted(name for _, name in socket.if_nameindex())


@pytest.mark.ros
def test_rclpy_child_runs_loopback_only():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60,
                          env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "LOCALHOST" and "hello" in proc.stdout
    if os.environ.get("BGPROMPT_NETNS") == "1":  # make test runs the suite in a loopback-only namespace
        assert _interfaces() == ["lo"], _interfaces()
