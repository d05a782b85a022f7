"""object_depth managed by nav2's lifecycle manager, like nav2's own servers:

    ros2 launch bgprompt_ros nav2_lifecycle.launch.py [object_depth.launch.py arguments]

The manager (nav2_lifecycle_manager, `autostart: true`) configures then activates the node (`autostart: false`
here, so it waits for the manager), and on its manage_nodes service pauses, resets or shuts it down.

`bond_timeout: 0.0`: nav2 servers also keep a bond (bondcpp heartbeats on /bond every 0.1 s); after activating a
node the manager waits bond_timeout / 2 for that bond, and with the default 4.0 it logs "Server object_depth was
unable to be reached after 4.00s by bond" and fails the whole startup. object_depth keeps no bond, so the bond
check is off; `attempt_respawn_reconnection` then has no effect (it acts on broken bonds only). Add the node to
your own manager's `node_names` with the same `bond_timeout: 0.0`, or give it a manager of its own as here.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("bgprompt_ros")
    args = [DeclareLaunchArgument("namespace", default_value="", description="namespace of both nodes"),
            DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                                  description="use /clock (bag replay)")]
    object_depth = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "object_depth.launch.py")),
        launch_arguments=[("autostart", "false"), ("node_name", "object_depth")],
    )
    manager = Node(
        package="nav2_lifecycle_manager",
        executable="lifecycle_manager",
        name="lifecycle_manager_object_depth",
        namespace=LaunchConfiguration("namespace"),
        parameters=[{"node_names": ["object_depth"], "autostart": True, "bond_timeout": 0.0,
                     "use_sim_time": LaunchConfiguration("use_sim_time")}],
        output="screen",
    )
    return LaunchDescription(args + [object_depth, manager])
