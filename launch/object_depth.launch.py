"""Start the object-depth node: `ros2 launch bgprompt_ros object_depth.launch.py [arg:=value ...]`.

Inputs and outputs are remappable by argument (`ros2 launch ... --show-args` lists them). Outputs follow
image_transport's sibling rule: depth on `object_depth/image`, its CameraInfo on `object_depth/camera_info`, so
depth_image_proc and RViz's DepthCloud find the info without remaps. The deprecated depth topic `object_depth`
(until 0.2) is remappable through `depth_legacy`.

Unless FASTRTPS_DEFAULT_PROFILES_FILE (Jazzy) or FASTDDS_DEFAULT_PROFILES_FILE (Kilted) is already set, the node
gets config/fastdds_large_messages.xml through both (Fast DDS' default settings lose images over ~512 KB on
best-effort QoS); give your camera driver and consumers the same file.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PROFILE_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")  # Fast DDS 2.x (Jazzy), 3.x
# (node topic, launch argument, description)
INPUTS = [
    ("image", "image", "colour image topic (rgb8 / bgr8 / mono8)"),
    ("camera_info", "camera_info", "camera info of the colour image"),
    ("mask", "mask", "object mask topic (mono8 or labels)"),
    ("sensor_depth", "sensor_depth", "RGB-D depth aligned to the colour image, for scale:=align-to-sensor (16UC1 mm "
                                     "or 32FC1 m)"),
]
OUTPUTS = [
    ("object_depth/image", "depth", "object depth (32FC1, NaN outside objects)"),
    ("object_depth/camera_info", "depth_camera_info", "camera info of the depth (keep it beside depth)"),
    ("object_depth", "depth_legacy", "DEPRECATED until 0.2: the old depth topic, published only when subscribed"),
    ("object_points", "points", "object point cloud (PointCloud2)"),
    ("object_markers", "markers", "object boxes (MarkerArray, built only when subscribed)"),
    ("composite", "composite", "what the network saw (debug image, torch backend only)"),
]


def generate_launch_description():
    share = get_package_share_directory("bgprompt_ros")
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("node_name", default_value="object_depth", description="node name"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "object_depth.yaml"),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure + activate at start; false under a lifecycle manager (nav2)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag replay: ros2 bag play --clock)", choices=["true", "false"]),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level",
                              choices=["debug", "info", "warn", "error", "fatal"]),
        DeclareLaunchArgument("fastdds_profile", default_value=os.path.join(share, "config",
                                                                            "fastdds_large_messages.xml"),
                              description="Fast DDS XML profile for the node (ignored when the environment sets one)"),
    ]
    args += [DeclareLaunchArgument(arg, default_value=topic, description=text) for topic, arg, text in INPUTS + OUTPUTS]
    user_profile = any(os.environ.get(var) for var in PROFILE_VARS)
    node = Node(
        package="bgprompt_ros",
        executable="object_depth_node",
        name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"),
                    {"autostart": LaunchConfiguration("autostart"),
                     "use_sim_time": LaunchConfiguration("use_sim_time")}],
        remappings=[(topic, LaunchConfiguration(arg)) for topic, arg, _ in INPUTS + OUTPUTS],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        additional_env={} if user_profile else {var: LaunchConfiguration("fastdds_profile") for var in PROFILE_VARS},
        output="screen",
    )
    return LaunchDescription(args + [node])
