"""Stand-in for ROS 2 Jazzy's `launch` (see ../README.md)."""
from .launch_context import LaunchContext
from .launch_description import LaunchDescription

__all__ = ["LaunchContext", "LaunchDescription"]
