"""Training in several processes (torchrun / `accelerate launch`): who gets which items, how they agree.

`--batch-size` is per process. A step's global batch (batch size × processes items) is cut from the
epoch's item order exactly as one process with the global batch size would cut it, then split into
contiguous shares, one per process. Gathering the shares in rank order rebuilds the global batch, so
2 processes × batch 8 train on the same items, in the same order, as 1 process × batch 16 — for any
dataset size: the last, partial global batch is split as evenly as it goes (e.g. 3 + 2 items) and
gathered with padding, so every process runs the same number of steps.

Every decision that ends or changes the loop (Ctrl-C, a non-finite loss) is all-reduced, so all
processes stop at the same step; a process that left alone would leave the others blocked in the gather.
With one process every function here is a plain no-op.

`evaluate` and `index` join the launched processes through `process_group` and split their embedding with
`turkclip.embedding.shard`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from turkclip.embedding.shard import share
from turkclip.errors import TurkclipError


def is_main_process() -> bool:
    """True in the process that logs, prints and writes files (rank 0; also when not launched in parallel)."""
    return os.environ.get("RANK", "0") == "0"


def _parallel() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def local_batches(global_batches: list[list], rank: int, world: int) -> list[list]:
    """This process's contiguous share of each global batch (shares differ by at most one item).

    A global batch with fewer items than processes (only ever the last one) is dropped, so that every
    process has at least one item in every step."""
    return [batch[share(len(batch), rank, world)] for batch in global_batches if len(batch) >= world]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows of `x` in rank order; gradients flow back to each process's own rows.

    Shares may differ in length by one (the last, partial batch): each is padded to the longest for the
    collective and the padding cut off again."""
    if not _parallel():
        return x
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(x)], device=x.device))
    return _GatherRows.apply(x, [int(s) for s in sizes])


class _GatherRows(torch.autograd.Function):
    """all_gather with padding. Backward: every process holds the same loss of the gathered rows, so the
    gradient of a process's rows is the sum over processes of their gradients for them (an all-reduce) —
    what torch.distributed.nn.all_gather does, without its equal-sizes requirement."""

    @staticmethod
    def forward(ctx, x, sizes):
        ctx.rank, ctx.sizes = dist.get_rank(), sizes
        longest = max(sizes)
        padded = torch.cat([x, x.new_zeros(longest - len(x), *x.shape[1:])]).contiguous()
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def any_process(flag: bool, device: torch.device) -> bool:
    """True on every process when `flag` is True on any of them (Ctrl-C on one rank stops them all)."""
    if not _parallel():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    """Wait for every process (e.g. until the checkpoint is written and the main process has reported)."""
    if _parallel():
        dist.barrier()


def rng_states() -> list[dict] | None:
    """Every process's RNG state (dropout), for the checkpoint; called by all processes, None when alone."""
    if not _parallel():
        return None
    mine = {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, mine)
    return states


def default_device(flag: str | None) -> torch.device:
    """--device as given, else cuda when a GPU is there, else the CPU."""
    return torch.device(flag or ("cuda" if torch.cuda.is_available() else "cpu"))


@contextmanager
def process_group(device_flag: str | None):
    """For `turkclip evaluate` and `index`: join the processes torchrun (or `accelerate launch`) started, for the
    command's duration, and yield this process's device — its own GPU (cuda:LOCAL_RANK, NCCL) or the CPU (gloo).
    Started alone, it yields the plain device and makes no group. (`train` joins through Accelerate instead.)"""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or dist.is_initialized():
        yield default_device(device_flag)
        return
    device = _process_device(device_flag, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _process_device(flag: str | None, local_rank: int) -> torch.device:
    wanted = default_device(flag)
    if wanted.type != "cuda":
        return wanted
    if wanted.index is not None:
        raise TurkclipError(f"--device {flag} names one GPU, but each of the launched processes takes its own"
                            " (cuda:LOCAL_RANK): pass --device cuda, or leave it out")
    return torch.device("cuda", local_rank)
