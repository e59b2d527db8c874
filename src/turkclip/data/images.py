"""Image files → CLIP pixels.

CLIP's preprocessing is: convert to RGB, resize the shortest edge to `size` (bicubic),
centre-crop `size`×`size`, scale to [0, 1], normalise with CLIP's mean/std. Everything
up to the crop is done once per image, here, and kept as uint8 (3·224·224 bytes per
image); the cheap float normalisation happens per batch on the device. The result is
bit-identical to `CLIPImageProcessor` (tests check it) without paying for JPEG decoding
and resizing every epoch.

File names from caption files are untrusted: `resolve` refuses anything that would
leave the images root.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from turkclip.errors import TurkclipError

if TYPE_CHECKING:
    import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


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
        import torch  # here: decoding (this module's other job) serves the torch-free ONNX runtime too

        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        # in place on a fresh float copy: one batch-sized float tensor instead of three
        return pixels.to(torch.float32, copy=True).div_(255.0).sub_(mean).div_(std)

    def normalize_array(self, pixels: np.ndarray) -> np.ndarray:
        """`normalize` in numpy, bit for bit (the same float32 operations in the same order): the ONNX runtime's."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, 3, 1, 1)
        out = pixels.astype(np.float32)
        out /= np.float32(255.0)
        out -= mean
        out /= std
        return out


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


def load_image(path: Path | io.BytesIO, size: int) -> np.ndarray:
    """Decode (a file, or bytes in a BytesIO), resize the short side to `size` (bicubic) and centre-crop:
    uint8 [3, size, size]."""
    with Image.open(path) as im:
        im = _to_rgb(im)
        w, h = im.size
        if w <= h:  # same rounding as transformers' get_resize_output_image_size
            new_w, new_h = size, int(size * h / w)
        else:
            new_w, new_h = int(size * w / h), size
        im = im.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto white, as transformers' CLIP processor does."""
    if "A" in im.getbands() or im.info.get("transparency") is not None:
        im = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
    return im.convert("RGB")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system
        return False


# PIL's ways of saying "not an image" (UnidentifiedImageError is an OSError; kept for the reader)
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def try_load(path: Path, size: int) -> np.ndarray | str:
    if not _is_file(path):
        return "missing"
    try:
        if path.stat().st_size == 0:
            return "empty file"
        return load_image(path, size)
    except DECODE_ERRORS as e:
        return f"unreadable ({type(e).__name__}: {e})"


def try_decode(data: bytes | None, size: int) -> np.ndarray | str:
    """`load_image` of an image's bytes (e.g. from a tar shard), or the problem as a string."""
    if not data:
        return "no image" if data is None else "empty image"
    try:
        return load_image(io.BytesIO(data), size)
    except DECODE_ERRORS as e:
        return f"unreadable ({type(e).__name__}: {e})"


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
) -> tuple[np.ndarray | None, list[int], list[tuple[str, str]]]:
    """Decode every image in parallel threads (PIL releases the GIL while decoding).

    Returns (uint8 pixels [K, 3, size, size], or None when K is 0; indices of the K images that loaded;
    [(filename, problem)] for the others). Whether bad images are fatal is the caller's call (`check_bad`).
    """
    root = Path(root)
    if not root.is_dir():
        raise TurkclipError(f"images folder not found: {root}")
    paths = [resolve(root, name) for name in filenames]
    results = list(tqdm(decode_in_order(paths, lambda p: try_load(p, size), workers), total=len(paths),
                        desc="decoding images", unit="img", leave=False, disable=None))  # None: not on a pipe
    kept = [i for i, r in enumerate(results) if not isinstance(r, str)]
    bad = [(filenames[i], r) for i, r in enumerate(results) if isinstance(r, str)]
    pixels = np.stack([results[i] for i in kept]) if kept else None
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
