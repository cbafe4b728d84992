"""Multi-process training through PyTorch's own engine: torchrun starts the processes, we join its process group."""

from __future__ import annotations

import os

import torch


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA); (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not torch.distributed.is_available():
        return 0, 1
    if not torch.distributed.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend=backend)
    if str(device).startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shard_map(items, fn, rank: int = 0, world: int = 1) -> list:
    """``[fn(x) for x in items]``, each rank computing its slice ``items[rank::world]``; every rank gets the whole
    list back, in the original order (gathered over the process group torchrun set up)."""
    items = list(items)
    mine = [(i, fn(items[i])) for i in range(rank, len(items), world)]
    if world <= 1:
        return [r for _, r in mine]
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    merged = dict(pair for part in gathered for pair in part)
    return [merged[i] for i in range(len(items))]
