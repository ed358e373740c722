"""Several processes over one corpus, with torch.distributed as torchrun launches it.

Nothing here is home-made: ``torchrun --nproc-per-node K -m gatescope ...`` starts the processes
and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR (or the --rdzv-* rendezvous over several
machines), `torch.distributed.init_process_group` joins them (gloo on CPU, NCCL when the model
runs on CUDA), and the accumulators are combined with its collectives. Rank r takes batches
r, r + K, r + 2K, ... of the corpus (`World.owns`); statistics are summed over the ranks with
``all_reduce(SUM)`` (counts exactly; float64 sums in another order, so equal to a single process
to ~1e-12 relative) and rank 0 writes the result.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gatescope.errors import GatescopeError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the processes: rank 0..size-1 (size 1 when alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, batch: int) -> bool:
        """Whether batch number ``batch`` of the corpus is this process's (every size-th, from rank)."""
        return batch % self.size == self.rank

    def device(self, requested: str) -> str:
        """The device this rank runs on: ``cuda`` becomes ``cuda:LOCAL_RANK`` when distributed."""
        return f"cuda:{self.local_rank}" if self.size > 1 and requested == "cuda" else requested


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in TORCHRUN_VARIABLES)


def join(distributed: bool = False, device: str = "cpu") -> World:
    """Join the process group torchrun set up (also when ``distributed`` is not asked: torchrun's
    variables say so); alone, World(0, 1). ``--distributed`` without torchrun is a one-line error."""
    import torch.distributed as dist

    if not launched_by_torchrun():
        if distributed:
            raise GatescopeError("--distributed runs under torchrun: torchrun --nproc-per-node K -m gatescope ... "
                                 f"(it sets {', '.join(TORCHRUN_VARIABLES)})")
        return World()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), backend)


def _device(world: World) -> torch.device:
    return torch.device(f"cuda:{world.local_rank}") if world.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(world: World, tensors: Sequence[torch.Tensor]) -> None:
    """Sum each tensor over the ranks, in place (every rank ends with the total)."""
    if world.size == 1:
        return
    import torch.distributed as dist

    where = _device(world)
    for t in tensors:
        moved = t.to(where)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        t.copy_(moved.to(t.device))


def all_ok(world: World, ok: bool) -> bool:
    """Whether every rank's ``ok`` holds (one failing rank makes all stop, rather than wait forever)."""
    if world.size == 1:
        return ok
    import torch.distributed as dist

    flag = torch.tensor([0 if ok else 1], dtype=torch.int64, device=_device(world))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag) == 0


def broadcast(world: World, value: Any) -> Any:
    """Rank 0's ``value`` (a picklable object that gatescope itself made), on every rank."""
    if world.size == 1:
        return value
    import torch.distributed as dist

    box = [value if world.main else None]
    dist.broadcast_object_list(box, src=0, device=_device(world))
    return box[0]


def leave(world: World) -> None:
    """Leave the process group at the end of a command, once every rank is done: a barrier, then every
    rank destroys its group; a rank other than 0 then ends its process at once (its output flushed),
    while rank 0 goes on to write the result.

    Destroying the group is not enough with gloo: a rank whose interpreter exited right after
    ``destroy_process_group()`` aborted in C++ static destruction ("terminate called without an active
    exception", no Python frame) in 11 of 37 two-process runs here, torchrun then failing the run;
    a 50 ms pause after it hid that (0 of 20), which makes it a teardown race inside torch, not an
    order gatescope can fix. Ending the process skips that teardown (0 of 20 aborted)."""
    if world.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
            if not world.main:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
