"""bgprompt_core: the ROS-free library of background prompting for object depth.

Baradad et al., "Background Prompting for Improved Object Depth": cut the object out with a mask,
place it on a learned background prompt (Eq. 1), run a frozen monocular depth network and map its
output to depth (Eq. 2). Prompts are learned with si-RMSE (Eq. 3) + a normal loss (Eq. 4).
"""
__version__ = "0.1.0"
