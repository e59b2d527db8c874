"""The cache folder as a whole: its entries with their sizes and last use, and trimming it by size and age.

An entry is the files of one cache item, named `<kind>-<key>.*` (`cache.make_key`): pixel stores, image banks,
shards' metadata, text prefixes. It is "used" when written or read (its files' modification time, `touch`), and
every write (`written`) evicts the least recently used entries until the folder is under the cap:
`TURKCLIP_CACHE_MAX_SIZE` (default 20GB, what a laptop spares; `0` or `none` for no cap). `turkclip cache
list|prune` shows and trims it by hand. No torch here: `turkclip cache` answers without loading it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

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


def touch(path: Path) -> None:
    """Mark a cache file as just used (its modification time): the size cap evicts the least recently used."""
    with contextlib.suppress(OSError):
        os.utime(path)

