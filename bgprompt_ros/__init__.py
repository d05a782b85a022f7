"""bgprompt_ros: the thin rclpy layer over bgprompt_core.

node.py (the object-depth node: lifecycle, threads, data path), ros_parameters.py and diagnostics.py (mixed into
it: its parameters, its /diagnostics), messages.py (its output messages), markers.py, params.py, conversions.py,
readiness.py; bags/ (make, writer, evaluate, report, live, and cli: the `bgprompt bag ...` verbs, entry point
bgprompt_ros.cli:register). Old module paths (bag, bag_live, bag_writer) still import, with a DeprecationWarning
naming the new one (_moved.py).
"""
from ._moved import install as _install_moved_paths

_install_moved_paths()
