"""Image files → CLIP pixels.

CLIP's preprocessing is: convert to RGB, resize the shortest edge to `size` (bicubic),
centre-crop `size`×`size`, scale to [0, 1], normalise with CLIP's mean/std. Everything
up to the crop is done once per image, here, and kept as uint8 (3·224·224 bytes per
image); the cheap float normalisation happens per batch on the device. The result is
bit-identical to `CLIPImageProcessor` (tests check it) without paying for JPEG decoding
and resizing every epoch.

File names from caption files are untrusted: `resolve` refuses anything that would
leave the images root. Image files are untrusted too: `open_photo` reads only photo formats and
refuses, from the header alone (before a pixel is decoded), a picture whose decoded source or
resized copy would be unbounded:

* `MAX_ASPECT`: CLIP resizes the short side to 224 and keeps a 224×224 centre crop, so a
  1×300000 PNG of a few hundred bytes would become a 224×67-million-pixel strip (15 GB) before the
  crop. Beyond 50:1 the crop sees under 2% of the picture: not a photo worth embedding, and the
  resized strip stays under 224×11200 (7.5 MB).
* `MAX_SOURCE_PIXELS` (40 MP, an 8K screenshot is 33 MP): decoding costs 3 bytes a pixel, and
  compositing transparency onto white ~12, so one decode stays under ~500 MB (measured: +454 MiB of
  peak memory for a transparent 39.7 MP PNG of 170 KB, +308 MiB without transparency). JPEGs above it
  (a 50 MP camera's, a 100 MP panorama) are decoded at 1/2, 1/4 or 1/8 scale (`draft`, the DCT
  does it for free) to no less than the resize needs, so they are read, not refused; only these
  oversized JPEGs differ (slightly) from `CLIPImageProcessor`, which would decode them whole.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from turkclip.errors import TurkclipError
from turkclip.progress import bar as progress_bar

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")  # what Image.open tries (JPEG covers cameras' MPO files)
MAX_SOURCE_PIXELS = 40_000_000  # see the module docstring for both bounds
MAX_ASPECT = 50


# PIL warns from ~89 MP on (it refuses from ~179 MP): the bounds here decide, before any decoding, and a JPEG
# that large is read at a reduced scale, so the warning would only be noise in `turkclip index`'s output
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageRefused(ValueError):
    """A readable picture that turkclip will not decode: too many pixels, or too thin to be a photo."""


@dataclass(frozen=True)
class Preprocess:
    """CLIP's image preprocessing settings (read from the model's preprocessor config)."""

    size: int = 224
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD

    @classmethod
    def from_processor(cls, processor, image_size: int) -> "Preprocess":
        if processor is None:
            return cls(size=image_size)
        size = processor.crop_size.get("height", image_size) if processor.crop_size else image_size
        return cls(size=int(size), mean=tuple(processor.image_mean), std=tuple(processor.image_std))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, S, S] → float [N, 3, S, S], on whatever device `pixels` is on."""
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        # in place on a fresh float copy: one batch-sized float tensor instead of three
        return pixels.to(torch.float32, copy=True).div_(255.0).sub_(mean).div_(std)


def resolve(root: Path, filename: str) -> Path:
    """`root/filename`, refusing absolute paths and `..` escapes from `root`."""
    if os.path.isabs(filename) or filename.startswith(("/", "\\")):
        raise TurkclipError(f"refusing absolute image path {filename!r}: file names must be relative to the images root")
    if "\x00" in filename:
        raise TurkclipError(f"refusing image path {filename!r}: it contains a NUL character")
    path = (root / filename).resolve()
    if not path.is_relative_to(root.resolve()):
        raise TurkclipError(f"refusing image path {filename!r}: it leaves the images root {root}")
    return path


@contextmanager
def open_photo(source: Path | io.BytesIO, fits: Callable[[tuple[int, int]], tuple[int, int]],
               draft: bool = False) -> Iterator[Image.Image]:
    """`source` opened (not yet decoded) for shrinking to `fits(its size)` (width, height), or larger.

    Refuses other formats than `PHOTO_FORMATS` (UnidentifiedImageError) and, before any decoding,
    pictures beyond `MAX_ASPECT` or `MAX_SOURCE_PIXELS` (ImageRefused). A JPEG above the pixel bound,
    or any JPEG when `draft` is asked for, is decoded at the smallest DCT scale that still covers `fits`.
    """
    with Image.open(source, formats=PHOTO_FORMATS) as im:
        w, h = im.size
        if max(w, h) > MAX_ASPECT * min(w, h):
            raise ImageRefused(f"{w}×{h} pixels: longer than {MAX_ASPECT}:1, too thin to be a photo")
        if draft or w * h > MAX_SOURCE_PIXELS:
            im.draft(im.mode, fits(im.size))  # JPEG only (other formats ignore it)
        if im.size[0] * im.size[1] > MAX_SOURCE_PIXELS:
            raise ImageRefused(f"{w}×{h} pixels ({w * h / 1e6:.0f} MP): more than the"
                               f" {MAX_SOURCE_PIXELS / 1e6:g} MP turkclip decodes")
        yield im


def load_image(path: Path | io.BytesIO, size: int) -> np.ndarray:
    """Decode (a file, or bytes in a BytesIO), resize the short side to `size` (bicubic) and centre-crop:
    uint8 [3, size, size]. Raises one of `DECODE_ERRORS` for a file that is not a photo or is refused."""
    with open_photo(path, lambda image_size: _short_side_to(image_size, size)) as im:
        im = to_rgb(im)
        new_w, new_h = _short_side_to(im.size, size)
        im = im.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def _short_side_to(image_size: tuple[int, int], size: int) -> tuple[int, int]:
    """(width, height) with the short side at `size`: the same rounding as transformers'
    get_resize_output_image_size."""
    w, h = image_size
    return (size, int(size * h / w)) if w <= h else (int(size * w / h), size)


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto white, as transformers' CLIP processor does."""
    if "A" in im.getbands() or im.info.get("transparency") is not None:
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        white.alpha_composite(im if im.mode == "RGBA" else im.convert("RGBA"))  # in place, no copy of an RGBA source
        return white.convert("RGB")
    return im.convert("RGB")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system
        return False


# PIL's ways of saying "not an image" (UnidentifiedImageError is an OSError; kept for the reader); ImageRefused is a
# ValueError
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def describe(error: Exception) -> str:
    """One of `DECODE_ERRORS` as the one-line problem reported for the file."""
    if isinstance(error, (ImageRefused, Image.DecompressionBombError)):  # PIL's own bound: over ~179 MP
        return f"refused ({error})"
    if isinstance(error, UnidentifiedImageError):
        return "unreadable (not a JPEG, PNG, WebP, BMP or GIF image)"
    lines = str(error).splitlines()
    return f"unreadable ({type(error).__name__}: {lines[0] if lines else 'no details'})"


def try_load(path: Path, size: int) -> np.ndarray | str:
    if not _is_file(path):
        return "missing"
    try:
        if path.stat().st_size == 0:
            return "empty file"
        return load_image(path, size)
    except DECODE_ERRORS as e:
        return describe(e)


def try_decode(data: bytes | None, size: int) -> np.ndarray | str:
    """`load_image` of an image's bytes (e.g. from a tar shard), or the problem as a string."""
    if not data:
        return "no image" if data is None else "empty image"
    try:
        return load_image(io.BytesIO(data), size)
    except DECODE_ERRORS as e:
        return describe(e)


def decode_in_order(jobs: Iterable, decode: Callable, workers: int | None = None, chunk: int = 256) -> Iterator:
    """`decode(job)` for every job, in order, on a thread pool (PIL releases the GIL while decoding), at most
    `chunk` results in memory at a time."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        batch = []
        for job in jobs:
            batch.append(job)
            if len(batch) == chunk:
                yield from pool.map(decode, batch)
                batch = []
        yield from pool.map(decode, batch)


def load_images(
    root: str | Path, filenames: list[str], size: int, workers: int | None = None
) -> tuple[torch.Tensor | None, list[int], list[tuple[str, str]]]:
    """Decode every image in parallel threads (PIL releases the GIL while decoding).

    Returns (uint8 pixels [K, 3, size, size], or None when K is 0; indices of the K images that loaded;
    [(filename, problem)] for the others). Whether bad images are fatal is the caller's call (`check_bad`).
    """
    root = Path(root)
    if not root.is_dir():
        raise TurkclipError(f"images folder not found: {root}")
    paths = [resolve(root, name) for name in filenames]
    results = list(progress_bar(decode_in_order(paths, lambda p: try_load(p, size), workers), total=len(paths),
                                desc="decoding images", unit="img", leave=False))
    kept = [i for i, r in enumerate(results) if not isinstance(r, str)]
    bad = [(filenames[i], r) for i, r in enumerate(results) if isinstance(r, str)]
    pixels = torch.from_numpy(np.stack([results[i] for i in kept])) if kept else None
    return pixels, kept, bad


def check_bad(root: str | Path, bad: list[tuple[str, str]], total: int, skip_bad: bool) -> None:
    """Bad images are an error unless the user asked to skip them."""
    if bad and not skip_bad:
        name, problem = bad[0]
        raise TurkclipError(
            f"{len(bad)} of {total} images under {root} are missing or unreadable (first: {name}: {problem});"
            " pass --skip-bad-images to leave them out"
        )


def check_present(root: str | Path, filenames: list[str], skip_bad: bool) -> None:
    """Fail fast, before any decoding, when files are missing and skipping was not asked for."""
    root = Path(root)
    if not root.is_dir():
        raise TurkclipError(f"images folder not found: {root}")
    missing = [(n, "missing") for n in filenames if not _is_file(resolve(root, n))]
    check_bad(root, missing, len(filenames), skip_bad)
