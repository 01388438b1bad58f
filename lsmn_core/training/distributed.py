"""Data-parallel training under torchrun (one machine or many, through torchrun's rendezvous).

Every process runs the same program with the same seed, so data, model, routing searches and
evaluations agree everywhere. Only the training steps differ: each process takes its share of every
global batch, and DistributedDataParallel averages the gradients, which gives the gradient of the
global batch's loss. Only rank 0 writes the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lsmn_core.errors import ConfigError


@dataclass
class DataParallel:
    rank: int
    world: int

    def shard(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This process's part of one task's global batch, and the weight that makes the average
        over processes of its mean loss equal the global batch's mean loss (parts may be uneven)."""
        x, y = batch
        if len(y) < self.world:
            raise ConfigError(f"a batch of {len(y)} cannot be split over {self.world} processes; "
                              "raise train.batch_size or use fewer processes")
        part = slice(self.rank * len(y) // self.world, (self.rank + 1) * len(y) // self.world)
        return x[part], y[part], (part.stop - part.start) * self.world / len(y)

    def share(self, tensor: torch.Tensor, owner: int) -> torch.Tensor:
        """`tensor` as the process `owner` holds it, in every process (every process passes a tensor of
        the same shape and dtype; bools travel as bytes)."""
        carried = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor.clone()
        dist.broadcast(carried, src=owner)
        return carried.bool() if tensor.dtype == torch.bool else carried

    def largest(self, values: torch.Tensor) -> torch.Tensor:
        """The elementwise maximum over the processes."""
        carried = values.clone()
        dist.all_reduce(carried, op=dist.ReduceOp.MAX)
        return carried

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        # A step trains only its tasks' routes: the other parameters get no gradient in that step.
        return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None,
                                       find_unused_parameters=True)


def from_environment() -> DataParallel | None:
    """Join the process group torchrun describes (WORLD_SIZE > 1); None for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return DataParallel(dist.get_rank(), dist.get_world_size())


def local_device(device: torch.device) -> torch.device:
    """Under torchrun each process drives its own GPU."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device
