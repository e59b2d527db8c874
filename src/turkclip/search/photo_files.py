"""Which files under a folder are photos, how to tell that one changed, and how to print their names.

A photo is a regular file (or a symlink to one inside the folder) whose name ends in one of
`PHOTO_SUFFIXES`. It is identified by its path relative to the folder (POSIX style) and
counts as changed when its size or modification time (ns) changes.

Scanning never stops at one file: whatever cannot be a photo of the index (a folder that cannot be
read, a link to nothing or a link loop, a name that is not UTF-8, a link that leads out of the folder)
is reported, one (path, reason) per item, and the scan goes on.
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from dataclasses import dataclass, field
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


@dataclass
class Scan:
    photos: list[PhotoFile] = field(default_factory=list)  # sorted by path
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path relative to the folder, why it is left out)


def scan_photos(root: Path, exclude: Path | None = None) -> Scan:
    """Every photo under `root` (recursive; hidden files and folders left out, symlinked folders not followed),
    and what was left out and why.

    Symlinked files are kept only when they point inside `root`; `exclude` (the index folder,
    when it lies inside `root`) is skipped.
    """
    root = root.resolve()
    exclude = exclude.resolve() if exclude is not None else None
    scan = Scan()

    def unreadable_folder(error: OSError) -> None:
        scan.skipped.append((_relative(error.filename, root), f"folder cannot be read ({error.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable_folder):
        here = Path(dirpath)  # never reached through a link (links to folders are not followed), so canonical
        kept = []
        for name in sorted(dirnames):
            path = here / name
            if name.startswith(".") or path == exclude:
                continue
            if not _is_utf8(name):
                scan.skipped.append((_relative(path, root), "folder name is not UTF-8: rename it to index its photos"))
            elif path.is_symlink():
                scan.skipped.append((_relative(path, root), "link to a folder (links to folders are not followed)"))
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(PHOTO_SUFFIXES):
                continue
            path = here / name
            found = _photo(path, root) if _is_utf8(name) else "file name is not UTF-8: rename it to index it"
            if isinstance(found, PhotoFile):
                scan.photos.append(found)
            elif found:
                scan.skipped.append((_relative(path, root), found))
    scan.photos.sort(key=lambda f: f.path)
    scan.skipped.sort()
    return scan


def _photo(path: Path, root: Path) -> PhotoFile | str | None:
    """The photo at `path`, or why it is left out (None: it vanished since the folder was listed)."""
    link = False
    try:
        link = path.is_symlink()
        st = path.stat()  # follows a link: ELOOP for a link loop, ENOENT for a link to nothing
        if link and not Path(os.path.realpath(path)).is_relative_to(root):
            return "link leads out of the folder (not indexed)"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "link loop"
        if e.errno == errno.ENOENT:
            return "link to nothing" if link else None
        return f"cannot be read ({e.strerror or type(e).__name__})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return PhotoFile(path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns)


def _is_utf8(name: str) -> bool:
    """False for a name whose bytes are not UTF-8 (Python hands them over as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _relative(path: str | Path, root: Path) -> str:
    path = Path(path)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def printable(name: str) -> str:
    """`name` safe to print on a terminal: bytes that are not UTF-8 as \\xNN; control and format characters
    (newlines, terminal escape sequences, bidirectional overrides) and line separators as Python escapes
    (\\n, \\x1b, \\u202e); everything else as it is."""
    out = []
    for ch in name:
        if "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8, as os.fsdecode hands it over
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


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
