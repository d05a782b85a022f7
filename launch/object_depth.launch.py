"""Start the object-depth node: `ros2 launch bgprompt_ros object_depth.launch.py [arg:=value ...]`."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("bgprompt_ros"), "config", "object_depth.yaml")
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters (YAML)"),
        DeclareLaunchArgument("autostart", default_value="true", description="configure + activate at start"),
        DeclareLaunchArgument("image", default_value="image", description="colour image topic"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="camera info topic"),
        DeclareLaunchArgument("mask", default_value="mask", description="object mask topic (mono8 or labels)"),
        DeclareLaunchArgument("sensor_depth", default_value="sensor_depth",
                              description="RGB-D depth for scale:=align-to-sensor (16UC1 mm or 32FC1 m)"),
    ]
    node = Node(
        package="bgprompt_ros",
        executable="object_depth_node",
        name="object_depth",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), {"autostart": LaunchConfiguration("autostart")}],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("camera_info", LaunchConfiguration("camera_info")),
            ("mask", LaunchConfiguration("mask")),
            ("sensor_depth", LaunchConfiguration("sensor_depth")),
        ],
        output="screen",
    )
    return LaunchDescription(args + [node])
