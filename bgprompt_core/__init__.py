"""bgprompt_core: the ROS-free library of background prompting for object depth.

Baradad et al., "Background Prompting for Improved Object Depth": cut the object out with a mask,
place it on a learned background prompt (Eq. 1), run a frozen monocular depth network and map its
output to depth (Eq. 2). Prompts are learned with si-RMSE (Eq. 3) + a normal loss (Eq. 4).

Where each part of the paper lives:
- Sec. 3.1, the 1-BG prompt (Fourier-parameterized background): prompts.py (FourierPrompt), config.py, dft.py
- Sec. 3.2, PNet (a U-Net from the mask to a background): prompts.py (PromptNet), unet.py
- Eq. 1, compositing with the network's normalisation phi: composite.py, normalization.py
- the frozen network D and its specs: depth_networks.py (loading), net_spec.py (what we know of each network)
- Eq. 2, disparity to depth: depth_transform.py; Eq. 1 + D + Eq. 2 as one module: model.py
- Eqs. 3-4, the losses; the evaluation protocol: metrics.py, evaluation.py (one per-sample function)
- inference on frames (masks, letterbox or re-centring, objects in a batch): estimator.py, masks.py,
  geometry.py, recenter.py; depth back at the frame's resolution (joint bilateral, every object pixel):
  upsample.py; backends: runtime.py, torch_backend.py, backends.py (onnxruntime),
  tensorrt_backend.py; the exported graph: export.py, onnx_graph.py
- RGB-D (beyond the paper): depth_noise.py (noise model, depth edges), alignment.py, fusion.py, cloud_metrics.py,
  object_summary.py; the simulated cameras for evaluation: sensor_model.py
- files: checkpoint.py (safetensors + JSON), atomic.py; errors: errors.py; colour maps for figures: visual.py
"""
__version__ = "0.1.0"
