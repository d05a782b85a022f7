"""Stand-ins for a depth network's backend and spec, for the estimator's geometry tests: 64 x 64 input, frames of
240 x 320 with intrinsics ``K`` (a letterbox of scale 0.2)."""
import numpy as np

K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
S = 64


class Spec:
    input_size = (S, S)
    output_kind = "relative_disparity"
    name = "fake"


class ColumnBackend:
    """Depth = the network-input column index + 1: a linear function, so interpolation reproduces it exactly."""

    name = "fake"

    def run(self, image, mask):
        return np.broadcast_to(np.arange(S, dtype=np.float32) + 1, (image.shape[0], S, S)).copy()
