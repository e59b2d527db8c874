"""Which files under a folder are photos, and how to tell that one changed.

A photo is a regular file (or a symlink to one inside the folder) whose name ends in one of
`PHOTO_SUFFIXES`. It is identified by its path relative to the folder (POSIX style) and
counts as changed when its size or modification time (ns) changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from turkclip.errors import TurkclipError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")  # gif: its first frame


@dataclass(frozen=True)
class PhotoFile:
    path: str  # relative to the folder, POSIX separators
    size: int
    mtime_ns: int

    @property
    def stamp(self) -> tuple[int, int]:
        return (self.size, self.mtime_ns)


def scan_photos(root: Path, exclude: Path | None = None) -> list[PhotoFile]:
    """Every photo under `root` (recursive, symlinked folders not followed), sorted by path.

    Symlinked files are kept only when they point inside `root`; `exclude` (the index folder,
    when it lies inside `root`) is skipped.
    """
    root = root.resolve()
    exclude = exclude.resolve() if exclude is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() != exclude)
        for name in filenames:
            if not name.lower().endswith(PHOTO_SUFFIXES) or name.startswith("."):
                continue
            path = here / name
            try:
                if path.is_symlink() and not path.resolve().is_relative_to(root):
                    continue
                st = path.stat()
            except OSError:  # vanished, dangling link, name too long
                continue
            found.append(PhotoFile(path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return sorted(found, key=lambda f: f.path)


def inside(root: Path, relative: str) -> Path | None:
    """`root/relative` if it names an existing file inside `root` (no `..`, absolute paths or
    symlinks that lead out), else None. For serving files named by untrusted requests."""
    from turkclip.data.images import resolve

    if not relative:
        return None
    try:
        path = resolve(root, relative)  # refuses absolute paths, NUL and escapes from root
    except (TurkclipError, OSError, RuntimeError):
        return None
    return path if path.is_file() else None
