"""Embedding a list of items across the processes of a `torch.distributed` group (torchrun, `accelerate launch`).

Each process takes one contiguous share of the items (shares differ in length by at most one; a process may get
none when there are fewer items than processes), embeds it, and every process receives all the rows, in the
items' order: shares are padded to the longest for one `all_gather` and the padding is cut off again. The
collectives run on the CPU under gloo and on the process's GPU under NCCL.

Without an initialised group of two or more processes every function here is the plain one-process path:
`embed(items, fn)` is `fn(items)`, no copy, no communication. Only a process that imported torch can be in a group,
so this module imports it only then: the ONNX runtime builds photo indexes through it without torch.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch


def _group():
    """torch.distributed when this process belongs to an initialised group, else None."""
    dist = sys.modules.get("torch.distributed")  # a process that never imported torch is alone
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without a group."""
    dist = _group()
    return (dist.get_rank(), dist.get_world_size()) if dist is not None else (0, 1)


def is_writer() -> bool:
    """True in the one process that writes files and prints (rank 0; also when alone)."""
    return rank_and_world()[0] == 0


def share(n: int, rank: int, world: int) -> slice:
    """Rank `rank`'s contiguous share of `n` items: the first `n % world` ranks take one item more."""
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))


class Share:
    """items[part] read lazily: only `len()` and `[a:b]`, so a disk-backed pixel store is still read a batch at a time."""

    def __init__(self, items, part: slice):
        self.items, self.part = items, part

    def __len__(self) -> int:
        return self.part.stop - self.part.start

    def __getitem__(self, s: slice):
        start, stop, step = s.indices(len(self))
        if step != 1:
            raise TypeError("a Share is read in contiguous slices only")
        return self.items[self.part.start + start : self.part.start + stop]


def embed(items, fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    """`fn(items)` → [N, D] rows, computed a share per process and gathered in the items' order on every process.

    `items` needs `len()` and `[a:b]` (a list, a tensor, a pixel store); `fn` receives this process's share with
    the same two operations and returns one row per item."""
    rank, world = rank_and_world()
    if world == 1:
        return fn(items)
    part = share(len(items), rank, world)
    return gather_rows(fn(Share(items, part)) if part.stop > part.start else None)


def gather_rows(rows: torch.Tensor | None) -> torch.Tensor:
    """Every process's rows [n_rank, D] (None: no rows here) concatenated in rank order, float32 on the CPU,
    on every process. Called by every process of the group."""
    import torch

    rank, world = rank_and_world()
    if world == 1:
        return rows.float().cpu() if rows is not None else torch.zeros(0, 0)
    dist = _group()
    device = _collective_device()
    n, dim = (0, -1) if rows is None else rows.shape  # a process without rows learns D from the others
    shapes = [torch.zeros(2, dtype=torch.long, device=device) for _ in range(world)]
    dist.all_gather(shapes, torch.tensor([n, dim], device=device))
    sizes, dim = [int(s[0]) for s in shapes], max(int(s[1]) for s in shapes)
    if dim < 0:  # nobody had rows
        return torch.zeros(0, 0)
    padded = torch.zeros(max(sizes), dim, device=device)
    if n:
        padded[:n] = rows.to(device=device, dtype=torch.float32)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return join([p.cpu() for p in parts], sizes)


def join(parts: list[torch.Tensor], sizes: list[int]) -> torch.Tensor:
    """Padded parts (one per rank, in rank order) → their first `sizes[r]` rows each, concatenated."""
    import torch

    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def gather_arrays(rows: np.ndarray | None) -> np.ndarray:
    """`gather_rows` for numpy rows (a photo index's); alone, torch plays no part."""
    if rank_and_world()[1] == 1:
        return rows if rows is not None else np.zeros((0, 0), np.float32)
    import torch

    return gather_rows(None if rows is None else torch.from_numpy(rows)).numpy()


def gather_objects(obj) -> list:
    """Every process's picklable `obj`, in rank order, on every process (e.g. which files of a share loaded)."""
    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    out = [None] * world
    _group().all_gather_object(out, obj)
    return out


def once(fn: Callable):
    """`fn()` run by rank 0 only (metrics from gathered embeddings, writing a file); every process waits for it
    and gets its result. An exception raised by `fn` is raised on every process, so none is left waiting."""
    rank, world = rank_and_world()
    if world == 1:
        return fn()
    box = [None]
    if rank == 0:
        try:
            box[0] = (True, fn())
        except Exception as e:  # handed on, then raised everywhere below
            box[0] = (False, e)
    _group().broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _collective_device() -> torch.device:
    """NCCL moves GPU tensors only; gloo (and a cpu:gloo,cuda:nccl pair for CPU tensors) CPU ones."""
    import torch

    if _group().get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
