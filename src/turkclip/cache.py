"""A small on-disk cache of tensors, keyed by everything they were computed from.

Used for frozen image-tower embeddings (and, through `data.pixel_store`, decoded pixels; through
`data.shard_set`, shards' metadata; through `roads.prefix_store`, remembered text prefixes). A key
is a hash of its parts (file names, sizes and modification times, preprocessing settings, a
fingerprint of the weights), so any change to those makes a new entry instead of a stale hit.
Entries are safetensors files, or `.npy` arrays read back memory-mapped (`load_array`: an
embedding bank of a million images is 2 GB that every process of a run shares through the page
cache instead of each holding a copy), written atomically (temp file + rename).

The cache is bounded: an entry (its files share the name `<kind>-<key>` before the first dot) is
"used" when written or read (its files' modification time), and each write evicts the least recently
used entries until the folder is under the cap: `TURKCLIP_CACHE_MAX_SIZE` (default 20GB, what a laptop
spares; `0` or `none` for no cap). `turkclip cache list|prune` shows and trims it by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from turkclip.atomic import atomic_path

DEFAULT_MAX_SIZE = "20GB"
_ENTRY = re.compile(r"[a-z][a-z-]*-[0-9a-f]{24}")  # "<kind>-<make_key>"
_AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def default_dir() -> Path:
    return Path(os.environ.get("TURKCLIP_CACHE", Path.home() / ".cache" / "turkclip"))


def parse_size(text: str) -> int:
    """'5GB', '500MB', '1.5T', '2GiB', '1024' → bytes (decimal units, as disks are sold; KiB/MiB/GiB binary)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?)B?\s*", text.upper())
    if not found:
        raise ValueError(f"{text!r} is not a size: give a number and a unit, e.g. 5GB, 500MB, 2GiB")
    number, prefix, binary = found.groups()
    return int(float(number) * (1024 if binary else 1000) ** "_KMGT".index(prefix or "_"))


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '2w', '3600s' → seconds."""
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        return float(value) * _AGES[unit]
    except (KeyError, ValueError):
        raise ValueError(f"{text!r} is not an age: give a number and one of s, m, h, d, w, e.g. 30d") from None


def max_size() -> int | None:
    """The cap in bytes from TURKCLIP_CACHE_MAX_SIZE (default 20GB); None for no cap."""
    text = os.environ.get("TURKCLIP_CACHE_MAX_SIZE", DEFAULT_MAX_SIZE)
    if text.strip().lower() in ("0", "none", "off", ""):
        return None
    try:
        return parse_size(text)
    except ValueError as e:
        from turkclip.errors import TurkclipError

        raise TurkclipError(f"TURKCLIP_CACHE_MAX_SIZE: {e}") from None


@dataclass
class Entry:
    name: str  # "<kind>-<key>"
    files: list[Path]
    size: int  # bytes
    used: float  # when last written or read (seconds since the epoch)


def entries(folder: Path) -> list[Entry]:
    """The cache's entries, least recently used first (files being written, dot-named, are not entries yet)."""
    groups: dict[str, list[Path]] = {}
    for path in Path(folder).iterdir() if Path(folder).is_dir() else ():
        name = path.name.split(".")[0]
        if path.is_file() and _ENTRY.fullmatch(name):  # only what turkclip writes: other files are never touched
            groups.setdefault(name, []).append(path)
    found = []
    for name, files in groups.items():
        stats = [f.stat() for f in files]
        found.append(Entry(name, files, sum(s.st_size for s in stats), max(s.st_mtime for s in stats)))
    return sorted(found, key=lambda e: e.used)


def prune(folder: Path, limit: int | None = None, older_than: float | None = None, keep: str | None = None,
          now: float | None = None) -> list[Entry]:
    """Remove entries unused for `older_than` seconds, then the least recently used until the rest fit in `limit`
    bytes; never the entry named `keep` (the one just written). Returns what was removed."""
    now = time.time() if now is None else now
    found = [e for e in entries(folder) if e.name != keep]
    total = sum(e.size for e in entries(folder))
    removed = []
    for entry in found:
        if (older_than is not None and now - entry.used > older_than) or (limit is not None and total > limit):
            for f in entry.files:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
            total -= entry.size
            removed.append(entry)
    return removed


def written(path: Path) -> None:
    """A cache entry's file was written: apply the size cap, evicting least recently used entries but this one."""
    limit = max_size()
    if limit is not None:
        prune(Path(path).parent, limit, keep=Path(path).name.split(".")[0])


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


def touch(path: Path) -> None:
    """Mark a cache file as just used (its modification time): the size cap evicts the least recently used."""
    with contextlib.suppress(OSError):
        os.utime(path)


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
