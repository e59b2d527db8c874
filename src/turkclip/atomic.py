"""Writing a file so that a reader (or a run killed mid-write) sees the old file or the whole new one, never half.

Kept apart from `turkclip.cache` (tensor entries, torch) because the photo index uses it too, and the ONNX runtime
builds photo indexes without torch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
