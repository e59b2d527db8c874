"""WebDataset tar shards as input: what img2dataset writes and open_clip trains from.

A shard is a plain tar whose consecutive members share a key: `000012.jpg` + `000012.txt` (the
caption; one per line if an image has several) or `000012.json` (`"caption": str` or
`"captions": [str]`, as img2dataset's metadata has it). A key is the member's path up to the first
dot of its file name, as webdataset reads it. `--shards "data/{00000..00099}.tar"` names many
(brace expansion, as webdataset and open_clip write it).

Shards are read once, streaming, in order, and decoded straight into the pixel store
(`pixel_store`): after that a run indexes images at random like any other set, and a second run
with the same shards reads the cache. Bad samples (an image that does not decode, no image, no
caption, a repeated key, a truncated shard) are counted; they stop the run unless
`--skip-bad-images` says to leave them out. Parsing is the standard library's `tarfile`: the few
lines here keep CLIP's exact preprocessing and count every bad sample, which a generic pipeline's
decoders and error handlers would not.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from braceexpand import braceexpand

from turkclip import cache
from turkclip.atomic import atomic_path
from turkclip.data.dataset import ImageTextSet
from turkclip.data.images import Preprocess, decode_in_order, try_decode
from turkclip.data.pixel_store import open_store, write_store
from turkclip.errors import TurkclipError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass
class Sample:
    where: str  # "shard.tar:key", for messages
    key: str  # the sample's name in the set (keys are unique across shards, as img2dataset writes them)
    image: bytes | None
    captions: list[str]
    problem: str | None = None  # set when the sample is bad before decoding
    image_ext: str = ""  # the image member's extension, e.g. "jpg"


def expand(pattern: str) -> list[Path]:
    """The shard files of a brace pattern (`data/{000..099}.tar`), each checked to exist."""
    paths = [Path(p) for part in pattern.split("::") for p in braceexpand(part)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise TurkclipError(f"{len(missing)} of {len(paths)} shards in {pattern!r} not found (first: {missing[0]})")
    return paths


def split_key(name: str) -> tuple[str, str]:
    """("dir/000012", "jpg") for "dir/000012.jpg"; the extension is everything after the name's first dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


def read_samples(paths: list[Path], need_caption: bool = True) -> Iterator[Sample]:
    """Every sample of every shard, in order, streaming (a shard is never held whole)."""
    seen: set[str] = set()
    for path in paths:
        group: dict[str, bytes] = {}
        key = None
        try:
            with tarfile.open(path, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    name_key, ext = split_key(member.name)
                    if name_key != key and key is not None:
                        yield _sample(path, key, group, seen, need_caption)
                        group = {}
                    key = name_key
                    group[ext] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            if key is not None:  # the last whole group before the damage
                yield Sample(f"{path.name}:{key}", key, None, [], f"shard ends early ({type(e).__name__}: {e})")
                key = None
            else:
                yield Sample(path.name, "", None, [], f"not a readable tar ({type(e).__name__}: {e})")
        if key is not None:
            yield _sample(path, key, group, seen, need_caption)


def _sample(path: Path, key: str, group: dict[str, bytes], seen: set[str], need_caption: bool = True) -> Sample:
    where = f"{path.name}:{key}"
    ext = next((e for e in IMAGE_EXTENSIONS if e in group), "")
    image = group.get(ext)
    try:
        captions = _captions(group)
    except (UnicodeDecodeError, ValueError) as e:
        return Sample(where, key, None, [], f"caption unreadable ({type(e).__name__}: {e})")
    if key in seen:
        return Sample(where, key, None, [], "key repeated (an earlier sample has it)")
    seen.add(key)
    if image is None:
        return Sample(where, key, None, captions, f"no image (members: {', '.join(sorted(group)) or 'none'})")
    if not captions and need_caption:
        return Sample(where, key, None, [], "no caption (.txt or .json with caption/captions)")
    return Sample(where, key, image, captions, image_ext=ext)


def _captions(group: dict[str, bytes]) -> list[str]:
    if "txt" in group:
        return [line.strip() for line in group["txt"].decode("utf-8-sig").splitlines() if line.strip()]
    if "json" in group:
        meta = json.loads(group["json"].decode("utf-8-sig"))
        found = meta.get("captions", meta.get("caption")) if isinstance(meta, dict) else None
        found = [found] if isinstance(found, str) else found
        return [c.strip() for c in found if isinstance(c, str) and c.strip()] if isinstance(found, list) else []
    return []


def load_shard_set(pattern: str, lang: str, preprocess: Preprocess, skip_bad: bool = False,
                   cache_dir: Path | None = None) -> ImageTextSet:
    """Images and captions of the shards in `pattern`, decoded once into the pixel store (or read from it)."""
    paths = expand(pattern)
    key = cache.make_key("shards-v1", cache.files_fingerprint(paths), preprocess.size)
    with cache.main_process_first():  # several processes: one decodes, the others read its cache entry
        found = open_store(cache_dir, key, preprocess.size)
        if found is None:
            found = _decode(paths, key, preprocess.size, cache_dir)
    pixels, meta = found
    bad = [tuple(b) for b in meta["bad"]]
    if not meta["keys"]:
        first = f" (first: {bad[0][0]}: {bad[0][1]})" if bad else ""
        raise TurkclipError(f"no usable samples in {pattern!r}{first}")
    if bad and not skip_bad:
        raise TurkclipError(f"{len(bad)} of {len(bad) + len(meta['keys'])} samples in {pattern!r} are bad"
                            f" (first: {bad[0][0]}: {bad[0][1]}); pass --skip-bad-images to leave them out")
    return ImageTextSet(filenames=meta["keys"], pixels=pixels, captions=meta["captions"], lang=lang, skipped=bad)


def _decode(paths: list[Path], key: str, size: int, cache_dir: Path | None):
    samples: list[Sample] = []  # the metadata of every sample (not its bytes, which are dropped once decoded)

    def jobs():
        for s in read_samples(paths):
            samples.append(Sample(s.where, s.key, None, s.captions, s.problem))
            yield s

    def decode(s: Sample):
        return s.problem if s.problem else try_decode(s.image, size)

    def describe(meta: dict) -> dict:
        failed = dict(meta["problems"])
        kept = [s for i, s in enumerate(samples) if i not in failed]
        return {"keys": [s.key for s in kept], "captions": [s.captions for s in kept],
                "bad": [(samples[i].where, problem) for i, problem in meta["problems"]]}

    return write_store(cache_dir, key, size, decode_in_order(jobs(), decode), None, describe,
                       desc=f"decoding {len(paths)} shard{'s' * (len(paths) > 1)}")


def unpack_images(pattern: str, folder: str | Path) -> tuple[int, int, list[tuple[str, str]]]:
    """Write the image of every sample to `folder/<key>.<ext>`, for `turkclip index --shards` (an index shows
    files). A file already there with the same size is kept, so a second run writes only new samples. Keys are
    untrusted: one that would leave `folder` is refused. Returns (written, kept, [(where, problem)] of samples
    without an image); whether an image decodes is the index's to find out, as for any photo."""
    from turkclip.data.images import resolve

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, kept, problems = 0, 0, []
    for sample in read_samples(expand(pattern), need_caption=False):
        if sample.problem or sample.image is None:
            problems.append((sample.where, sample.problem or "no image"))
            continue
        target = resolve(folder, f"{sample.key}.{sample.image_ext}")
        if target.is_file() and target.stat().st_size == len(sample.image):
            kept += 1
            continue
        with atomic_path(target) as tmp:
            tmp.write_bytes(sample.image)
        written += 1
    return written, kept, problems
