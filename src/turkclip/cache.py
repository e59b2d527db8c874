"""A small on-disk cache of tensors, keyed by everything they were computed from.

Used for frozen image-tower embeddings (and, through `data.pixel_store`, decoded pixels). A key
is a hash of its parts (file names, sizes and modification times, preprocessing settings, a
fingerprint of the weights), so any change to those makes a new entry instead of a stale hit.
Entries are safetensors files, or `.npy` arrays read back memory-mapped (`load_array`: an
embedding bank of a million images is 2 GB that every process of a run shares through the page
cache instead of each holding a copy), written atomically (temp file + rename).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file


def default_dir() -> Path:
    return Path(os.environ.get("TURKCLIP_CACHE", Path.home() / ".cache" / "turkclip"))


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
    with safe_open(path, "pt") as f:
        meta = json.loads((f.metadata() or {}).get("turkclip", "{}"))
    return load_file(path), meta


@functools.cache
def _umask() -> int:
    """Read once, at the first write: reading it means setting it, which other threads must not see change."""
    mask = os.umask(0o022)  # put straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to, renamed to `path` when the block ends without an error and
    removed otherwise: a reader (or a run killed mid-write) sees the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the file ends as readable as any the user writes
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save(folder: Path | None, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    if folder is None:
        return
    with atomic_path(Path(folder) / f"{kind}-{key}.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"turkclip": json.dumps(meta)})


def load_array(folder: Path | None, kind: str, key: str) -> torch.Tensor | None:
    """A cached array, memory-mapped copy-on-write (pages are read when touched; writes stay private), or None."""
    if folder is None:
        return None
    path = Path(folder) / f"{kind}-{key}.npy"
    if not path.is_file():
        return None
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def save_array(folder: Path | None, kind: str, key: str, tensor: torch.Tensor) -> None:
    if folder is None:
        return
    with atomic_path(Path(folder) / f"{kind}-{key}.npy") as tmp, tmp.open("wb") as f:
        np.save(f, tensor.detach().cpu().contiguous().numpy())


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
