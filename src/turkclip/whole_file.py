"""Files that turkclip writes for itself (indexes, checkpoints) go to disk whole or not at all, and a failure says
what happened in one line.

`write_whole` writes through `cache.atomic_path` (a temporary file renamed over the old one), so a reader, a
kill or a full disk leaves the previous file intact. It checks the free space first: a write that cannot fit is
refused before it starts, with the numbers. Writers report a full disk in different ways (an OSError with
ENOSPC from Python, a SafetensorError from safetensors, a RuntimeError "unexpected pos" from torch.save), so
all three become a `TurkclipError` naming the file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from safetensors import SafetensorError

from turkclip.cache import atomic_path
from turkclip.errors import TurkclipError

WRITE_ERRORS = (OSError, SafetensorError, RuntimeError)


def write_whole(path: Path, nbytes: int, write: Callable[[Path], None], then: str) -> None:
    """`write(tmp)`, then `tmp` renamed to `path`. `nbytes`: about how much it writes; `then`: what the user can
    do when it fails (ends the one-line error, e.g. "the previous index is untouched; ...")."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if free < nbytes:
            raise TurkclipError(f"cannot write {path}: no space left on the device ({_size(nbytes)} needed,"
                                f" {_size(free)} free); {then}")
        with atomic_path(path) as tmp:
            write(tmp)
    except WRITE_ERRORS as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e).splitlines() or [type(e).__name__])[0]
        raise TurkclipError(f"cannot write {path} ({reason}); {then}") from e


def _size(n: int) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"
