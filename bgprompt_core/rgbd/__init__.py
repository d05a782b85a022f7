"""RGB-D beyond the paper: metres from an RGB-D sensor, per object.

noise.py (the sensor's noise model), alignment.py (relative depth to the sensor's metres), planes.py (the support
plane), edges.py (depth edges, flying pixels), holes.py (hole filling), fusion_config.py (how fusion is
configured), fusion.py (the per-object fusion chaining them).
"""
