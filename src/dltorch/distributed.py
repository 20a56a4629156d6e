"""Distributed data parallel as a mode of the one training loop (as torchvision's references do it).

Under `torchrun`, every rank walks the same shuffled order, cuts its own shard out of each global batch,
and DDP averages the gradients; rank 0 alone writes checkpoints, files and tracking records. The door joins the
process group first (`process_group`, torchvision's `init_distributed_mode`), before anything asks "am I rank 0?",
and passes the answer down.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def _expects_group() -> bool:
    return launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1


@contextmanager
def process_group(device: torch.device) -> Iterator[bool]:
    """Join the process group torchrun set up (nothing to join for a single process) and leave it on exit.

    Yields whether this process writes (rank 0): files, checkpoints and tracking are its job alone.
    """
    joins = _expects_group() and not dist.is_initialized()
    if joins:
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield is_main()
    finally:
        if joins:
            dist.destroy_process_group()


def require_group() -> None:
    """Before the first rank-dependent step: a rank that has not joined would believe it is rank 0 of 1."""
    if _expects_group() and not dist.is_initialized():
        raise RuntimeError("launched by torchrun but not in its process group: "
                           "join it first with `with distributed.process_group(device) as writes:`")


def agree(value: str) -> str:
    """Rank 0's value on every rank (a decision each rank could otherwise take differently, e.g. by timing)."""
    if world_size() == 1:
        return value
    chosen = [value]
    dist.broadcast_object_list(chosen, src=0)
    return chosen[0]


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def shard(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This rank's slice of a global batch, and the factor that makes DDP's gradient average equal the
    gradient of the global batch's mean loss even when the slices are uneven."""
    size = world_size()
    if size == 1:
        return inputs, targets, 1.0
    local_inputs = inputs.tensor_split(size)[rank()]
    local_targets = targets.tensor_split(size)[rank()]
    return local_inputs, local_targets, len(local_targets) * size / len(targets)


def sum_across_ranks(totals: dict[str, float]) -> dict[str, float]:
    if world_size() == 1:
        return totals
    values = torch.tensor(list(totals.values()), dtype=torch.float64)
    dist.all_reduce(values)
    return dict(zip(totals, values.tolist(), strict=True))


def launch(argv: list[str], nproc: int) -> int:
    """Run this same command under torchrun with nproc processes; returns its exit code.

    Multi-node runs are started by the user with torchrun directly (see README), not from here.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]
    return subprocess.call(command)
