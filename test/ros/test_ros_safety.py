"""The loopback-only ROS environment every rclpy process of this test suite runs under, observed from inside an
rclpy child: its network interfaces and namespace, and the sockets its DDS participant opened."""
import json
import os
import subprocess
import sys

import pytest

CHILD = r"""
import json, os, socket, rclpy
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
mine = set()  # this process's sockets, then the UDP ports they are bound to (/proc/net/udp* lists the namespace)
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith("socket:["):
        mine.add(target[8:-1])
ports = set()
for table in ("/proc/self/net/udp", "/proc/self/net/udp6"):
    for line in open(table).read().splitlines()[1:]:
        f = line.split()
        if f[9] in mine:
            ports.add(int(f[1].rsplit(":", 1)[1], 16))
print(json.dumps({"range": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"), "got": got[:1],
                  "interfaces": sorted(name for _, name in socket.if_nameindex()),
                  "netns": os.stat("/proc/self/ns/net").st_ino, "udp_ports": sorted(ports)}))
node.destroy_node()
rclpy.shutdown()
"""


def _probe(env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spdp_multicast_port(domain: int) -> int:
    """The port DDS's participant discovery listens on for multicast (RTPS: PB 7400 + DG 250 * domain + d0 0)."""
    return 7400 + 250 * domain


@pytest.mark.ros
def test_rclpy_child_runs_loopback_only():
    """Both safety measures, as an rclpy child of this suite experiences them:
    - ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (always): its DDS participant talks (a message round trip) without
      opening the multicast discovery port, so it announces itself to no network;
    - the private namespace of tools/loopback-run (BGPROMPT_NETNS=1, as `make test` runs): the child sees loopback
      only, in a network namespace other than the one loopback-run was started in.
    The first is checked in every run (conftest sets it for every child), the second wherever it is claimed."""
    netns = os.environ.get("BGPROMPT_NETNS")
    seen = _probe({**os.environ})
    assert seen["range"] == "LOCALHOST" and seen["got"] == ["hello"], seen
    domain = int(os.environ.get("ROS_DOMAIN_ID", "0"))
    assert seen["udp_ports"], seen  # it did open sockets (the round trip worked), just not the discovery one
    assert spdp_multicast_port(domain) not in seen["udp_ports"], (
        f"the rclpy child's DDS opened the multicast discovery port {spdp_multicast_port(domain)}: "
        f"ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST did not take effect ({seen}); "
        + ("only the private namespace keeps it in" if netns == "1" else "nothing keeps discovery on this machine"))
    if netns == "1":
        assert seen["interfaces"] == ["lo"], f"BGPROMPT_NETNS=1 but the child sees {seen['interfaces']}"
        outer = os.environ.get("BGPROMPT_OUTER_NETNS")
        assert outer and int(outer) != seen["netns"], (
            f"BGPROMPT_NETNS=1 but the child's network namespace ({seen['netns']}) is the one loopback-run "
            f"started in ({outer})")
