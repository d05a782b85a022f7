"""``bgprompt train``: learn a background prompt through a frozen depth network (paper Sec. 3-4).

Loss: si-RMSE (Eq. 3) + normal loss (Eq. 4), GT rescaled to masked mean 5. SGD with momentum 0.9,
the reference code's schedule by default (lr 5e-4, divided by 10 at 80% of the steps; the paper's
text says 5e-5: ``--lr 5e-5``). ``--prompt finetune`` is the paper's baseline: the same loss and
schedule on the network's own weights, white background.

Reproducible and resumable: the batch of step t is drawn from (seed, t) alone, and a checkpoint
holds the trainable tensors and the optimizer state, so ``--resume`` continues exactly, also with another
number of processes. Data-parallel under ``torchrun`` (distributed.py says how batches, gradients,
validation and files are shared out).

Robot recordings: ``--data`` may name ROS 2 bags (a rosbag2 directory with metadata.yaml, or ``bag:DIR``),
mixed with render directories. A bag's objects are cropped like the node (``recenter``) and supervised by the
sensor only: Eq. 3 + Eq. 4 over the trustworthy readings (data/trust.py, sensor_loss.py); a bag's ground truth,
when it has one, serves validation alone. Render sets in such a run keep their ground truth (weight = mask).
``--init shipped`` (or a shipped prompt name, or a checkpoint) warm-starts the prompt.

The package: config.py (TrainConfig, the schedule), samples.py (data, batches, validation samples), state.py
(the resumable OUT.state/ files), trainer.py (the loop).
"""
from __future__ import annotations

from .config import BAG_FIELDS, LOWER_IS_BETTER, TrainConfig, TrainingError, learning_rate, parse_weighted
from .samples import EVAL_SEED, SampleCache, batch_items, val_items
from .trainer import Trainer, init_bias_from, log, resolve_device

__all__ = ["BAG_FIELDS", "EVAL_SEED", "LOWER_IS_BETTER", "SampleCache", "TrainConfig", "Trainer", "TrainingError",
           "batch_items", "init_bias_from", "learning_rate", "log", "parse_weighted", "resolve_device", "val_items"]
