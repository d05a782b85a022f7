"""Bags as training / validation sets of the trainer (train/): decoded once, sharded over torchrun ranks.

Each rank decodes every ``world``-th used frame of a bag (bags.bag_samples); the object samples are then gathered
on every rank and put in bag order (frame, object id), so a set is the same list on every rank and in one process,
and the trainer's batches (a function of (seed, step) alone) are the ones one process would draw.
"""
from __future__ import annotations

import logging

from bgprompt_core.method.config import ConfigError

from .bags import BagReadConfig, BagStats, bag_samples, no_pixels_message
from .trust import TrustConfig

log = logging.getLogger("bgprompt.train.bags")


class BagSet:
    """A bag's object samples in memory, in bag order (``len``, ``[i]``, like the other data sets)."""

    def __init__(self, spec: str, size: int, cfg: BagReadConfig, trust: TrustConfig, dist=None,
                 progress: bool = True):
        rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
        mine, stats = bag_samples(spec, size, cfg, trust, rank, world, progress=progress and rank == 0)
        parts = dist.gather((mine, stats)) if dist is not None else [(mine, stats)]
        merged = BagStats(stats.bag)
        samples = []
        for part, st in parts:
            samples += part
            merged.merge(st)
        samples.sort(key=lambda x: (x[0], x[1]))
        self.spec, self.stats = spec, merged
        self.samples = [s for _, _, s in samples]
        self.keys = [(i, oid) for i, oid, _ in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


def supervision_report(sets: list) -> dict:
    """Per run: supervised pixels and objects, over the bag sets (and per bag)."""
    bags = [s.stats.as_dict() for s in sets if isinstance(s, BagSet)]
    total = {k: sum(b[k] for b in bags) for k in ("frames", "objects", "objects_seen", "object_pixels",
                                                   "trusted_pixels", "supervised_pixels", "input_pixels")}
    total["supervised_share"] = total["supervised_pixels"] / max(total["input_pixels"], 1)
    total["trusted_share"] = total["trusted_pixels"] / max(total["object_pixels"], 1)
    return {**total, "bags": bags}


def check_usable(sets: list) -> None:
    """A ConfigError (with the numbers) when a bag gave no sample: never train a prompt on nothing (a set without
    samples would also make every batch that draws from it fail)."""
    empty = [s for s in sets if isinstance(s, BagSet) and not len(s)]
    if empty:
        raise ConfigError(no_pixels_message([s.stats for s in empty]))
