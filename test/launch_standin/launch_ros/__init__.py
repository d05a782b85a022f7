"""Stand-in for ROS 2 Jazzy's `launch_ros` (see ../README.md)."""
