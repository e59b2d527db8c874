"""Decoded images on disk, read per batch: memory that does not grow with the data.

Decoding and resizing a JPEG costs milliseconds; reading back its 150 KB of CLIP-sized uint8
pixels costs microseconds. So every image is decoded once, in order, into one flat file of rows
[3, S, S] (a cache entry, `pixels-<key>.u8` + `.json`), and a batch reads only its own rows with
`os.preadv`. The process holds the batch and nothing else: 1k or 1M images cost the same RSS.
Hot rows stay in the OS page cache, which is the kernel's memory to reclaim, and which every
process of a multi-process run shares: one rank decodes (`cache.main_process_first`), all read.

Why not a memory map: it serves the same bytes, but every page it touches stays in the
process's resident set until the kernel reclaims it, so an epoch over 100k images would show
15 GB of RSS. Why not decode in DataLoader workers each epoch: measured in bench/RESULTS.md
(`bench/data_scale.py`): decoding is the slow part, so doing it once wins from the second epoch on.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from turkclip.cache import atomic_path
from turkclip.progress import bar as progress_bar


class PixelStore:
    """uint8 images [N, 3, S, S] in a file, indexed like a tensor: `store[i]`, `store[a:b]`, `store[idx]`."""

    def __init__(self, path: str | Path, count: int, size: int, fingerprint: str = "", keep_alive=None):
        self.path, self.count, self.size = Path(path), count, size
        self.fingerprint = fingerprint  # names the file's contents: its cache key
        self._keep_alive = keep_alive  # e.g. the temporary folder holding the file
        self._fd, self._pid = None, None

    @property
    def row_bytes(self) -> int:
        return 3 * self.size * self.size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self.size, self.size)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return self[[int(key)]][0]
        if isinstance(key, slice):
            key = range(*key.indices(len(self)))
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        idx = np.asarray(key, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"image index out of range for {len(self)} images")
        return torch.from_numpy(self._read(idx % max(1, len(self))))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """Rows in the asked order; each run of consecutive rows is one read straight into the output."""
        out = np.empty((len(rows), 3, self.size, self.size), dtype=np.uint8)
        if not len(rows):
            return out
        fd, flat = self._file(), out.reshape(len(rows), -1)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            first = int(sorted_rows[run[0]])
            if np.array_equal(order[run], np.arange(order[run[0]], order[run[0]] + len(run))):
                self._pread(fd, memoryview(flat[order[run[0]] : order[run[0]] + len(run)]).cast("B"), first)
            else:  # a run read back in another order (or repeated rows): one read, then placed
                buf = np.empty((len(run), flat.shape[1]), dtype=np.uint8)
                self._pread(fd, memoryview(buf).cast("B"), first)
                flat[order[run]] = buf
        return out

    def _pread(self, fd: int, view: memoryview, row: int) -> None:
        offset, done = row * self.row_bytes, 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n == 0:
                raise OSError(f"{self.path} is shorter than its {self.count} images: delete it to decode again")
            done += n

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)


def fingerprint(pixels) -> str:
    """What names a set of pixels in a cache key: a store's own fingerprint, or a hash of a tensor's bytes."""
    if isinstance(pixels, PixelStore):
        return pixels.fingerprint
    from turkclip.cache import tensors_fingerprint

    return tensors_fingerprint({"pixels": pixels})


# Writing ------------------------------------------------------------------------------------------------------------


def open_store(folder: Path | None, key: str, size: int) -> tuple[PixelStore, dict] | None:
    """(store, metadata) of a finished cache entry, or None. The `.json` is written last: it marks a whole file."""
    if folder is None:
        return None
    meta_path, data_path = Path(folder) / f"pixels-{key}.json", Path(folder) / f"pixels-{key}.u8"
    if not (meta_path.is_file() and data_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("size") != size or data_path.stat().st_size != meta["count"] * 3 * size * size:
        return None
    return PixelStore(data_path, meta["count"], size, fingerprint=key), meta


def write_store(folder: Path | None, key: str, size: int, decoded: Iterable[np.ndarray | str], total: int | None,
                describe: Callable[[dict], dict] | None = None, desc: str = "decoding images") -> tuple[PixelStore, dict]:
    """Write each decoded image (uint8 [3, S, S]) as the next row; a str is a problem and writes nothing.

    Returns the store and its metadata: `count`, `problems` (the position and text of each str) and whatever
    `describe(metadata)` adds once every image is written. The rows go to a temporary name and the metadata is
    written last, so a killed run leaves no entry that `open_store` would take. With no cache folder the file
    lives in a temporary folder for as long as the store does.
    """
    keep_alive = None
    if folder is None:
        keep_alive = tempfile.TemporaryDirectory(prefix="turkclip-pixels-")
        folder = Path(keep_alive.name)
    data_path = Path(folder) / f"pixels-{key}.u8"
    count, problems = 0, []
    with atomic_path(data_path) as tmp, tmp.open("wb", buffering=0) as f:
        for position, item in enumerate(progress_bar(decoded, total=total, desc=desc, unit="img", leave=False)):
            if isinstance(item, str):
                problems.append((position, item))
                continue
            if item.shape != (3, size, size) or item.dtype != np.uint8:
                raise ValueError(f"decoded image has shape {item.shape}, expected (3, {size}, {size}) uint8")
            f.write(memoryview(np.ascontiguousarray(item)).cast("B"))
            count += 1
    meta = {"size": size, "count": count, "problems": problems}
    meta.update(describe(meta) if describe else {})
    with atomic_path(data_path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(meta))
    return PixelStore(data_path, count, size, fingerprint=key, keep_alive=keep_alive), meta
