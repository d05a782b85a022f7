"""What one training step and one validation read: the data sets decoded once into tensors at the training
resolution, the batch of step t as a pure function of (seed, t), and the paper's validation samples (seed 1338)."""
from __future__ import annotations

import numpy as np
import torch

from ..data.bag_sets import BagSet
from ..data.bags import BagReadConfig, is_bag
from ..data.open import open_dataset
from ..data.transforms import Compose, Recenter, ReplaceBackground, crop_to_square, resize
from ..data.trust import TrustConfig
from ..distributed import Distributed

EVAL_SEED = 1338


class SampleCache:
    """Datasets decoded once into memory as tensors at the training resolution.

    With ``bags`` (a run that reads ROS 2 bags), bag specs become BagSets (decoded at once, sharded over ``dist``'s
    ranks) and every sample carries ``weight`` (the loss's pixels) and ``ref`` / ``ref_mask`` (validation's
    reference): a render sample's are its mask and ground truth."""

    def __init__(self, specs: list[str], size: int, recenter: bool,
                 bags: tuple[BagReadConfig, TrustConfig] | None = None, dist: Distributed | None = None):
        tf = Compose(Recenter() if recenter else None, crop_to_square, lambda s: resize(s, size),
                     ReplaceBackground("white"))
        self.bag_mode = bags is not None
        self.sets = [BagSet(spec, size, *bags, dist=dist) if bags is not None and is_bag(spec)
                     else open_dataset(spec, tf) for spec in specs]
        self._cache: dict[tuple[int, int], dict] = {}

    def get(self, d: int, i: int) -> dict:
        if isinstance(self.sets[d], BagSet):
            return self.sets[d][i]
        if (d, i) not in self._cache:
            self._fill(d, i)
        return self._cache[(d, i)]

    def _fill(self, d: int, i: int) -> None:
        """Decode sample i with the rest of its shard: shards are compressed as a whole, so random access
        one sample at a time would decompress a shard per sample."""
        ds = self.sets[d]
        for j in ds.shard_range(i) if hasattr(ds, "shard_range") else (i,):
            if (d, j) not in self._cache:
                s = ds[j]
                if self.bag_mode:  # a render in a bag run: supervised by its ground truth on its mask
                    s = {**s, "weight": s["mask"][0], "ref": s["depth"], "ref_mask": s["mask"][0]}
                self._cache[(d, j)] = s

    def batch(self, items: list[tuple[int, int]], device) -> dict[str, torch.Tensor]:
        samples = [self.get(d, i) for d, i in items]
        keys = ("image", "depth", "mask", "K") + (("weight", "ref", "ref_mask") if self.bag_mode else ())
        return {k: torch.stack([s[k] for s in samples]).to(device) for k in keys}


def batch_items(seed: int, step: int, sizes: list[int], weights: list[float], batch: int) -> list[tuple[int, int]]:
    """The samples of one step, a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    p = np.asarray(weights, float) / sum(weights)
    ds = rng.choice(len(sizes), size=batch, p=p)
    return [(int(d), int(rng.integers(sizes[d]))) for d in ds]


def val_items(size: int, count: int) -> list[int]:
    """The paper's protocol: ``count`` random samples with seed 1338 (all of them when fewer)."""
    return sorted(np.random.default_rng(EVAL_SEED).permutation(size)[:count].tolist())

