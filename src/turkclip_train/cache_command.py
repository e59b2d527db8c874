"""`turkclip cache list|prune`: what the cache folder holds, and trimming it by size or age."""

from __future__ import annotations

import time
from pathlib import Path

from turkclip import cache_folder as cache
from turkclip.errors import TurkclipError


def cache_command(args) -> None:
    folder = Path(args.cache_dir) if args.cache_dir else cache.default_dir()
    if args.action == "list":
        found = cache.entries(folder)
        now = time.time()
        for e in reversed(found):  # most recently used first
            print(f"{_size(e.size):>9}  {_age(now - e.used):>8} ago  {e.name}")
        limit = cache.max_size()
        print(f"{len(found)} entries, {_size(sum(e.size for e in found))} in {folder} (cap: "
              f"{_size(limit) if limit else 'none'}, TURKCLIP_CACHE_MAX_SIZE)")
        return
    if args.max_size is None and args.older_than is None:
        raise TurkclipError("say what to remove: --max-size SIZE (e.g. 5GB) and/or --older-than AGE (e.g. 30d)")
    try:
        limit = cache.parse_size(args.max_size) if args.max_size is not None else None
        older = cache.parse_age(args.older_than) if args.older_than is not None else None
    except ValueError as e:
        raise TurkclipError(str(e)) from None
    removed = cache.prune(folder, limit, older)
    left = cache.entries(folder)
    print(f"removed {len(removed)} entries ({_size(sum(e.size for e in removed))}); {len(left)} left"
          f" ({_size(sum(e.size for e in left))}) in {folder}")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _age(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit}"
    return f"{seconds:.0f}s"
