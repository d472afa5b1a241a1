"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, nccl on GPU).

Every rank builds the same global batch (a pure function of seed and step) and keeps its share of
the rows, ``rank::world``: the distributed sampler.  Losses are averaged over the valid steps of
the *global* batch, so that DistributedDataParallel's gradient average equals the gradient of one
process on the combined batch (tested).  Logging, evaluation and checkpoints happen on rank 0.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes (a single process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's rows of a global batch (every value has the batch on dimension 0)."""
        if self.world == 1:
            return batch
        return {k: v[self.rank :: self.world] for k, v in batch.items()}

    def total(self, value: torch.Tensor) -> torch.Tensor:
        """Sum of a scalar over the ranks."""
        if self.world == 1:
            return value
        value = value.clone()
        dist.all_reduce(value)
        return value

    def scale_loss(self, mean_loss: torch.Tensor, n_local: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(loss to backpropagate, global mean loss to log) from this rank's mean over n_local steps.

        DDP averages gradients over the ranks, so the backpropagated loss is this rank's sum over
        the global count, times the world size.
        """
        if self.world == 1:
            return mean_loss, mean_loss.item()
        n_local = n_local.to(mean_loss.dtype)
        n_global = self.total(n_local.detach())
        # A rank without valid steps in this segment has a NaN mean (0/0): its share is 0, and it
        # still runs backward so that the gradient all-reduce happens on every rank.
        share = torch.where(n_local > 0, mean_loss * n_local / n_global, torch.zeros_like(mean_loss))
        return share * self.world, self.total(share.detach()).item()

    def wrap(self, model: nn.Module, device: torch.device, find_unused: bool) -> nn.Module:
        if self.world == 1:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the group.  A DistributedDataParallel wrapper's reducer keeps the group alive
        through autograd hooks on the model's parameters, in reference cycles; collected only at
        interpreter exit, the group's C++ threads would be destroyed still joinable there, and the
        process aborts ("terminate called without an active exception", SIGABRT).  So the cycles
        are collected first, and the group's threads are joined here."""
        if self.world > 1 and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()


def join_group(device_name: str) -> tuple[Group, str]:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR/PORT); returns the group and the device name for this rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group(), device_name
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name.startswith("cuda")
    if cuda:
        device_name = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    # Rank 0 evaluates alone while the others wait in the next collective: allow long evaluations
    # (the default timeouts, 10 min for nccl, would kill a run during a 9600-step evaluation).
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=3))
    return Group(rank, world, local_rank), device_name
