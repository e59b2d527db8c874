"""A small on-disk cache of tensors, keyed by everything they were computed from.

Used for frozen image-tower embeddings (and, through `data.pixel_store`, decoded pixels; through
`data.shard_set`, shards' metadata; through `roads.prefix_store`, remembered text prefixes). A key
is a hash of its parts (file names, sizes and modification times, preprocessing settings, a
fingerprint of the weights), so any change to those makes a new entry instead of a stale hit.
Entries are safetensors files, or `.npy` arrays read back memory-mapped (`load_array`: an
embedding bank of a million images is 2 GB that every process of a run shares through the page
cache instead of each holding a copy), written atomically (temp file + rename).

The cache is bounded (`cache_folder`): each write evicts the least recently used entries until the
folder is under `TURKCLIP_CACHE_MAX_SIZE`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from turkclip.atomic import atomic_path
from turkclip.cache_folder import (
    default_dir,  # noqa: F401 (callers ask `cache.default_dir()`; it needs no torch)
    touch,
    written,
)


def make_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def files_fingerprint(paths: list[Path]) -> list:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), -1, -1))
    return out


def tensors_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of tensor contents, e.g. a module's `state_dict()` (about 1 s per GB)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(tensors.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())  # hashed in place, not copied
    return h.hexdigest()


def load(folder: Path | None, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, metadata) of a cached entry, or None."""
    if folder is None:
        return None
    path = Path(folder) / f"{kind}-{key}.safetensors"
    if not path.is_file():
        return None
    touch(path)
    with safe_open(path, "pt") as f:
        meta = json.loads((f.metadata() or {}).get("turkclip", "{}"))
    return load_file(path), meta


def save(folder: Path | None, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    if folder is None:
        return
    with atomic_path(Path(folder) / f"{kind}-{key}.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"turkclip": json.dumps(meta)})
    written(Path(folder) / f"{kind}-{key}.safetensors")


def load_array(folder: Path | None, kind: str, key: str) -> torch.Tensor | None:
    """A cached array, memory-mapped copy-on-write (pages are read when touched; writes stay private), or None."""
    if folder is None:
        return None
    path = Path(folder) / f"{kind}-{key}.npy"
    if not path.is_file():
        return None
    touch(path)
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def save_array(folder: Path | None, kind: str, key: str, tensor: torch.Tensor) -> None:
    if folder is None:
        return
    with atomic_path(Path(folder) / f"{kind}-{key}.npy") as tmp, tmp.open("wb") as f:
        np.save(f, tensor.detach().cpu().contiguous().numpy())
    written(Path(folder) / f"{kind}-{key}.npy")


def read_exact(fd: int, view: memoryview, offset: int) -> bool:
    """Fill `view` from file `fd` at `offset` with `os.preadv` (no file position, safe across threads; the bytes land
    straight in the caller's buffer). False when the file ends first."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            return False
        done += n
    return True


class RowWriter:
    """A cached `.npy` array [N, D] float32 written a block of rows at a time, N unknown until the end: rows go
    to a temporary file as they come and become the entry at `close()`, so no more than a block is held."""

    def __init__(self, folder: Path, kind: str, key: str):
        self.path = Path(folder) / f"{kind}-{key}.npy"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".rows")
        self.count, self.dim = 0, None

    def append(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to("cpu", torch.float32).contiguous().numpy()
        self.dim = rows.shape[1]
        self._raw.write(rows.tobytes())
        self.count += len(rows)

    def close(self) -> None:
        """Write the entry (header, then the rows copied over a block at a time) and drop the temporary file."""
        with self._raw:
            if self.dim is None:
                return
            self._raw.flush()
            self._raw.seek(0)
            with atomic_path(self.path) as tmp, tmp.open("wb") as f:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                          "shape": (self.count, self.dim)}
                np.lib.format.write_array_header_1_0(f, header)
                shutil.copyfileobj(self._raw, f, 16 << 20)
        written(self.path)


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """In a torch.distributed run, rank 0 runs the block first and the others after it (they then find its cache
    entry instead of decoding again); without one, just runs the block."""
    import torch.distributed as dist

    multi = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if multi and dist.get_rank() != 0:
        dist.barrier()
    try:
        yield
    finally:
        if multi and dist.get_rank() == 0:
            dist.barrier()
