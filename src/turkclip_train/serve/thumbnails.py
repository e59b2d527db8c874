"""Small JPEGs of indexed photos for the page's result grid, made once and kept in a bounded memory cache.

A grid tile is ~180×140 CSS pixels; a phone photo is 12 MP and 3–5 MB. Sending originals made the grid
blank until megabytes arrived (and let a crafted index send any file as a "photo"); a thumbnail
is re-encoded from decoded pixels, so only pictures ever leave the server, at most `BOX` pixels on the long
side (sharp on a 2× screen). JPEGs are decoded at a reduced DCT scale (`draft`), so a 12 MP photo costs
a 1/8-scale decode. The cache holds encoded bytes, at most `cache_bytes` in all (least recently used
out first), keyed by the file's path, size and mtime: a changed photo gets a new thumbnail.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from cachetools import LRUCache
from PIL import Image, ImageOps

from turkclip.data.images import DECODE_ERRORS, open_photo, to_rgb

BOX = 384  # pixels, long side
QUALITY = 82  # JPEG quality: ~15-30 KB a thumbnail
CACHE_BYTES = 64 * 1024 * 1024  # ~3000 thumbnails


class Thumbnails:
    def __init__(self, cache_bytes: int = CACHE_BYTES):
        self._cache = LRUCache(maxsize=cache_bytes, getsizeof=len)

    @staticmethod
    def stamp(file: Path) -> str | None:
        """An ETag for `file` as it is now (size and mtime), or None when it cannot be read."""
        try:
            st = file.stat()
        except OSError:
            return None
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'

    def cached(self, file: Path, stamp: str) -> bytes | None:
        return self._cache.get((os.fspath(file), stamp))

    def make(self, file: Path, stamp: str) -> bytes | None:
        """Render (slow: run it off the event loop) and cache; None for a file that is not a photo (any more)."""
        try:
            data = render(file)
        except DECODE_ERRORS:
            return None
        if len(data) <= self._cache.maxsize:
            self._cache[(os.fspath(file), stamp)] = data
        return data


def render(file: Path, box: int = BOX) -> bytes:
    """`file` shrunk to fit `box`×`box`, turned upright (EXIF orientation), as JPEG bytes."""
    with open_photo(file, lambda size: _fit(size, box), draft=True) as im:
        im.thumbnail((box, box), Image.Resampling.BICUBIC)  # in place, first: the full-size pixels go at once
        im = to_rgb(ImageOps.exif_transpose(im))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=QUALITY)
        return out.getvalue()


def _fit(size: tuple[int, int], box: int) -> tuple[int, int]:
    scale = min(1.0, box / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
