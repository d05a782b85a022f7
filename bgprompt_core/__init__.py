"""bgprompt_core: the ROS-free library of background prompting for object depth.

Baradad et al., "Background Prompting for Improved Object Depth": cut the object out with a mask,
place it on a learned background prompt (Eq. 1), run a frozen monocular depth network and map its
output to depth (Eq. 2). Prompts are learned with si-RMSE (Eq. 3) + a normal loss (Eq. 4).

Each subpackage's docstring says what it holds: method/ (the paper in torch), networks/ (the frozen
network), runtime/ (backends and the exported graph, torch-free), frame/ (a frame to per-object
depth), messages/ (sensor_msgs, sync, bags), rgbd/ (metres from an RGB-D sensor), evaluation/.
Shared by all: errors.py, settings.py, geometry.py, atomic.py. Old flat module paths still import,
with a DeprecationWarning naming the new one (_moved.py).
"""
from ._moved import install as _install_moved_paths

__version__ = "0.1.0"
_install_moved_paths()
