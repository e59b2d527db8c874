"""`ImageTextSet`: one split ready for the model — decoded pixels (on disk, read per batch; or, for shards, decoded
as they stream) plus captions per image."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from turkclip import cache
from turkclip.data.captions import CaptionSet
from turkclip.data.images import Preprocess, check_bad, check_present, decode_in_order, resolve, try_load
from turkclip.data.pixel_store import PixelStore, open_store, write_store
from turkclip.errors import TurkclipError


@dataclass
class ImageTextSet:
    filenames: list[str]
    pixels: PixelStore | torch.Tensor  # uint8 [N, 3, S, S], CLIP-resized and cropped; indexed per batch (or a
    # shard_set.ShardImages: decoded from WebDataset shards as they are read, in order)
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
    paths = [resolve(root, n) for n in names]
    key = cache.make_key("pixels-v2", cache.files_fingerprint(paths), preprocess.size)
    with cache.main_process_first():  # several processes: one decodes, the others read its cache entry
        found = open_store(cache_dir, key, preprocess.size)
        if found is None:
            found = write_store(cache_dir, key, preprocess.size,
                                decode_in_order(paths, lambda p: try_load(p, preprocess.size)), len(paths))
    pixels, meta = found
    failed = {position for position, _ in meta["problems"]}
    kept = [i for i in range(len(names)) if i not in failed]
    bad = [(names[position], problem) for position, problem in meta["problems"]]
    if not kept:
        raise TurkclipError(f"none of the {len(names)} images under {root} could be read (first: {bad[0][0]}: {bad[0][1]})")
    check_bad(root, bad, len(names), skip_bad)
    return ImageTextSet(
        filenames=[names[i] for i in kept],
        pixels=pixels,
        captions=[list(captions.records[i].captions) for i in kept],
        lang=captions.lang,
        skipped=bad,
    )
