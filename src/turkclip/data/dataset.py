"""`ImageTextSet`: one split ready for the model — decoded pixels plus captions per image."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .. import cache
from ..errors import TurkclipError
from .captions import CaptionSet
from .images import Preprocess, check_bad, check_present, load_images, resolve


@dataclass
class ImageTextSet:
    filenames: list[str]
    pixels: torch.Tensor  # uint8 [N, 3, S, S], CLIP-resized and cropped
    captions: list[list[str]]  # captions of image i (may be empty: then it is gallery only)
    lang: str
    skipped: list[tuple[str, str]]  # (filename, problem) of images left out

    def __len__(self) -> int:
        return len(self.filenames)

    def texts(self) -> tuple[list[str], torch.Tensor]:
        """All captions flattened in order, and the image index of each."""
        texts = [c for caps in self.captions for c in caps]
        owner = [i for i, caps in enumerate(self.captions) for _ in caps]
        return texts, torch.tensor(owner, dtype=torch.long)

    def with_captions(self, other: CaptionSet) -> "ImageTextSet":
        """The same images (pixels shared) with `other`'s captions, e.g. English beside Turkish."""
        by_name = {r.filename: r.captions for r in other.records}
        return replace(self, captions=[list(by_name.get(f, [])) for f in self.filenames], lang=other.lang)


def load_image_text_set(
    captions: CaptionSet, images_root: str | Path, preprocess: Preprocess, skip_bad: bool = False,
    cache_dir: Path | None = None,
) -> ImageTextSet:
    """Decode the images of `captions` (or take them from the pixel cache) and pair them with captions."""
    names = [r.filename for r in captions.records]
    root = Path(images_root)
    check_present(root, names, skip_bad)
    first: dict[str, str] = {}
    for name in names:  # "a.jpg" and "./a.jpg" are one image: twice in a gallery, it would be its own negative
        if first.setdefault(os.path.normpath(name), name) != name:
            raise TurkclipError(f"{captions.source}: {first[os.path.normpath(name)]!r} and {name!r} are the same"
                                " image file; list each image once")
    key = cache.make_key("pixels-v1", cache.files_fingerprint([resolve(root, n) for n in names]), preprocess.size)
    hit = cache.load(cache_dir, "pixels", key)
    if hit is not None:
        tensors, meta = hit
        pixels, kept, bad = tensors["pixels"], tensors["kept"].tolist(), [tuple(b) for b in meta["bad"]]
    else:
        pixels, kept, bad = load_images(root, names, preprocess.size)
        cache.save(cache_dir, "pixels", key, {"pixels": pixels, "kept": torch.tensor(kept)}, {"bad": bad})
    check_bad(root, bad, len(names), skip_bad)
    return ImageTextSet(
        filenames=[names[i] for i in kept],
        pixels=pixels,
        captions=[list(captions.records[i].captions) for i in kept],
        lang=captions.lang,
        skipped=bad,
    )
