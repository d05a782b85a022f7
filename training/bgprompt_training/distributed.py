"""Data-parallel training on torch.distributed, launched by ``torchrun`` (single node, multi-node, elastic).

    torchrun --standalone --nproc_per_node 8 -m bgprompt_training train ...      # one node, 8 GPUs
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 -m bgprompt_training train ...

Rules (recorded in every checkpoint's metadata, see ``Distributed.describe``):
- ``--batch`` is the GLOBAL batch: each of the W ranks computes ``batch / W`` samples of it. The samples of
  step t are a pure function of (seed, t, batch) (train.samples.batch_items), and rank r takes the r-th contiguous
  slice. A run on 2 ranks therefore sees exactly the data of a 1-process run with the same ``--batch``,
  and resuming with another world size continues the same sequence.
- Gradients are averaged over ranks: the 1-BG prompt's Fourier parameters by one all-reduce, PNet and the
  finetuned network through DistributedDataParallel. The mean over ranks of per-rank mean losses is the
  global mean because every rank has the same share, so the update equals the 1-process update (to float
  summation order).
- The learning rate is not rescaled: the global batch is what ``--batch`` says at any world size. To use more
  GPUs for a bigger batch, raise ``--batch`` and, as a starting point, ``--lr`` in proportion (the linear
  scaling rule of Goyal et al. 2017). Neither is done automatically.
- Backend: ``nccl`` when CUDA is available, else ``gloo`` (``--dist-backend`` overrides). With a loopback
  rendezvous (torchrun --standalone, 127.0.0.1) gloo is bound to the loopback interface.
- Rank 0 alone writes checkpoints, TensorBoard and progress bars. Validation is sharded over ranks and
  gathered, and its per-sample figures are averaged in sample order, so it equals 1-process validation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from bgprompt_core.method.config import ConfigError

BACKENDS = ("auto", "nccl", "gloo")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; ``world == 1`` without torchrun (then every collective is a no-op)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.backend is not None

    def shard(self, items: list, what: str = "batch") -> list:
        """This rank's contiguous share of a list whose length is a multiple of the world size."""
        if len(items) % self.world:
            raise ConfigError(f"the global {what} of {len(items)} does not split over {self.world} ranks: use a "
                             f"multiple of {self.world}")
        n = len(items) // self.world
        return items[self.rank * n:(self.rank + 1) * n]

    def average_gradients(self, params) -> None:
        """All-reduce the gradients of ``params`` to their mean over ranks (the 1-BG prompt's update)."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # one collective for all of them
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: float) -> float:
        """The mean of a number over ranks (one all-reduce)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device="cuda" if self.backend == "nccl" else "cpu")
        dist.all_reduce(t)
        return float(t.item() / self.world)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def describe(self, batch: int) -> dict:
        """What a checkpoint records about how it was trained."""
        return {"world_size": self.world, "backend": self.backend or "none", "global_batch": batch,
                "per_rank_batch": batch // self.world, "master_addr": os.environ.get("MASTER_ADDR", ""),
                "lr_rule": "global batch fixed by --batch; lr not rescaled with the world size"}


def choose_backend(requested: str = "auto") -> str:
    if requested not in BACKENDS:
        raise ConfigError(f"--dist-backend must be one of {BACKENDS}, got {requested!r}")
    if requested != "auto":
        return requested
    return "nccl" if torch.cuda.is_available() else "gloo"


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def init_distributed(requested: str = "auto") -> Distributed:
    """Join the torchrun job this process belongs to; a plain process gets ``Distributed()`` (world 1).

    A job of world size 1 still initialises the process group, so the wrapper's own cost can be measured.
    """
    if not launched_by_torchrun():
        return Distributed()
    backend = choose_backend(requested)
    if backend == "gloo" and os.environ.get("MASTER_ADDR", "127.0.0.1") in LOOPBACK:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # a loopback rendezvous stays on loopback
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), backend)


def shutdown(d: Distributed) -> None:
    """Leave the job together: a rank that tears its process group down while rank 0 still writes its last
    checkpoint can abort in gloo ("terminate called without an active exception")."""
    if d.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
