"""One camera frame to per-object depth: masks, segmentation, views (letterbox, re-centring), the estimator, summaries."""
