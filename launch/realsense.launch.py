"""object_depth beside a RealSense (realsense2_camera 4.x topics: /camera/camera/...), metric by the aligned depth.

    ros2 launch realsense2_camera rs_launch.py align_depth.enable:=true      # the camera (or start_camera:=true)
    ros2 launch bgprompt_ros realsense.launch.py mask:=/my_segmenter/mask

Parameters: config/realsense.yaml (scale: align-to-sensor, fusion: fill). Every argument of
object_depth.launch.py passes through (use_sim_time, log_level, output remaps, ...).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

CAMERA = "/camera/camera"  # rs_launch.py's camera_namespace/camera_name defaults (4.x)


def generate_launch_description():
    share = get_package_share_directory("bgprompt_ros")
    args = [
        DeclareLaunchArgument("start_camera", default_value="false", choices=["true", "false"],
                              description="also start realsense2_camera's rs_launch.py with aligned depth"),
        DeclareLaunchArgument("mask", default_value="mask", description="object masks (your segmenter's topic)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "realsense.yaml"),
                              description="node parameters (YAML)"),
    ]
    camera = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("realsense2_camera"), "launch",
                                                            "rs_launch.py"])),
        launch_arguments=[("align_depth.enable", "true")],
        condition=IfCondition(LaunchConfiguration("start_camera")),
    )
    object_depth = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "object_depth.launch.py")),
        launch_arguments=[
            ("image", f"{CAMERA}/color/image_raw"),
            ("camera_info", f"{CAMERA}/color/camera_info"),
            ("sensor_depth", f"{CAMERA}/aligned_depth_to_color/image_raw"),
            ("mask", LaunchConfiguration("mask")),
            ("params_file", LaunchConfiguration("params_file")),
        ],
    )
    return LaunchDescription(args + [camera, object_depth])
