"""The remembered lower-layer states of many captions, on disk, read per batch: memory that does not grow with them.

A caption's prefix is [positions, D] float32 (positions 0..its pooled one), about 30 KB at ViT-B/32's width: 100k
captions are 3 GB. They are written once, one after another, into a flat file of rows (`text-prefix-<key>.f32`,
with `.npz` holding where each caption starts and its pooled position, written last: it marks a whole entry), and a
batch reads its captions' rows with `os.preadv`, as the pixel store reads images. The process holds the batch;
rows read often stay in the OS page cache, which the kernel reclaims and every process shares. Without a cache
folder the file lives in a temporary folder for as long as the store does.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from turkclip import cache
from turkclip.atomic import atomic_path
from turkclip.cache_folder import touch, written


class PrefixStore:
    """Prefix states of captions 0..n-1 (the order they were written in): `read(i)` → ([positions, D], pool)."""

    def __init__(self, data: Path, starts: np.ndarray, pools: np.ndarray, dim: int, keep_alive=None):
        self.data, self.starts, self.pools, self.dim = data, starts, pools, dim
        self._keep_alive = keep_alive
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return len(self.pools)

    def read(self, i: int) -> tuple[torch.Tensor, int]:
        rows = int(self.starts[i + 1] - self.starts[i])
        out = np.empty((rows, self.dim), dtype=np.float32)
        if not cache.read_exact(self._file(), memoryview(out).cast("B"), int(self.starts[i]) * self.dim * 4):
            raise OSError(f"{self.data} is shorter than its index says: delete it to compute the prefixes again")
        return torch.from_numpy(out), int(self.pools[i])

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own descriptor
            self._fd, self._pid = os.open(self.data, os.O_RDONLY), os.getpid()
        return self._fd

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)


def open_prefixes(folder: Path | None, key: str) -> PrefixStore | None:
    """The finished cache entry `key`, or None."""
    if folder is None:
        return None
    index, data = Path(folder) / f"text-prefix-{key}.npz", Path(folder) / f"text-prefix-{key}.f32"
    if not (index.is_file() and data.is_file()):
        return None
    with np.load(index) as f:
        starts, pools, dim = f["starts"], f["pools"], int(f["dim"])
    if data.stat().st_size != int(starts[-1]) * dim * 4:
        return None
    touch(index)
    touch(data)
    return PrefixStore(data, starts, pools, dim)


def write_prefixes(folder: Path | None, key: str, states) -> PrefixStore:
    """Write `states` (an iterable of ([positions, D] tensors, pool), in caption order) and return their store."""
    keep_alive = None
    if folder is None:
        keep_alive = tempfile.TemporaryDirectory(prefix="turkclip-prefix-")
        folder = Path(keep_alive.name)
    data = Path(folder) / f"text-prefix-{key}.f32"
    starts, pools, dim = [0], [], 0
    with atomic_path(data) as tmp, tmp.open("wb") as f:
        for state, pool in states:
            rows = state.detach().to("cpu", torch.float32).contiguous().numpy()
            f.write(rows.tobytes())
            starts.append(starts[-1] + len(rows))
            pools.append(pool)
            dim = rows.shape[1]
    starts, pools = np.asarray(starts, dtype=np.int64), np.asarray(pools, dtype=np.int32)
    with atomic_path(data.with_suffix(".npz")) as tmp, tmp.open("wb") as f:
        np.savez(f, starts=starts, pools=pools, dim=dim)
    if keep_alive is None:
        written(data)
    return PrefixStore(data, starts, pools, dim, keep_alive)
