"""Several processes filling one trajectory store: `torchrun` and `accelerate launch`.

Launched by either, every process runs the same command; they find each other through the environment
the launcher sets (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT). The store's cells are the unit of
work: rank r scores the missing shards s with s % world == r, and every cell is keyed by example_id, so
nothing is ever aligned by position across processes. Rank 0 alone creates the run directory, holds its
lock and writes the manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def my_shards(self, shards: Sequence[int]) -> list[int]:
        """This process's share of the (missing) shards of one snapshot."""
        return [s for s in shards if s % self.world == self.rank]

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place: the sum over every process (the same order on each, so the same result on each)."""
        if self.world > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor


def launched_processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def join(device: str | None) -> tuple[ProcessGroup, str | None]:
    """The process group this process belongs to (one process when not launched by torchrun or
    accelerate), and its device: with several processes on GPUs, each takes the GPU of its local rank."""
    if launched_processes() <= 1:
        return ProcessGroup(), device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend)
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), local_rank), device


def leave(group: ProcessGroup) -> None:
    if group.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# -- FSDP: the proxy's parameters, gradients and optimiser state split over the processes ------------------
def shard_model(model, device: str) -> None:
    """Shard `model` in place with FSDP (fully_shard): each decoder layer is one unit, gathered for its
    forward and backward, then freed. FSDP averages gradients over the processes (a plain sum needs a
    reduction gloo lacks), so a caller whose loss is each process's share of the batch mean scales it by the
    number of processes."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(torch.device(device).type, (torch.distributed.get_world_size(),))
    layers = next((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)
                   and len(m) == getattr(model.config, "num_hidden_layers", -1)), [])
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state(model, optimizer=None) -> tuple[dict, dict | None]:
    """The whole model's weights (and the optimiser's state, keyed by parameter name) gathered from a sharded
    model, on every process. Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    weights = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None
    return weights, optim


def load_full_state(model, optimizer, weights: dict, optim: dict) -> None:
    """Put gathered weights and optimiser state (full_state's) back into a sharded model, on every process."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optim, options=options)
