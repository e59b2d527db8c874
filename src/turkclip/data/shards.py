"""WebDataset tar shards as input: what img2dataset writes and open_clip trains from.

A shard is a plain tar whose consecutive members share a key: `000012.jpg` + `000012.txt` (the
caption; one per line if an image has several) or `000012.json` (`"caption": str` or
`"captions": [str]`, as img2dataset's metadata has it). A key is the member's path up to the first
dot of its file name, as webdataset reads it. `--shards "data/{00000..00099}.tar"` names many
(brace expansion, as webdataset and open_clip write it).

Shards are read streaming, in order, a shard never held whole; `shard_set` makes a training or
evaluation set of them. Bad samples (an image that does not decode, no image, no caption, a
repeated key, a truncated shard, a member over its size limit, a caption that is not Unicode text or
JSON nested too deeply to read) are counted; they stop the run unless `--skip-bad-images` says to
leave them out. Parsing is the standard library's `tarfile`: the few
lines here keep CLIP's exact preprocessing and count every bad sample, which a generic pipeline's
decoders and error handlers would not.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from braceexpand import braceexpand

from turkclip.atomic import atomic_path
from turkclip.errors import TurkclipError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
MAX_IMAGE_BYTES = 64 * 2**20  # a member is read whole: an image member over this is a bad sample, never read
MAX_TEXT_BYTES = 2**20  # the same for a caption (.txt / .json) member or any other
TOO_BIG = "\0too big"  # a group entry no member's extension can be: why the sample is bad


@dataclass
class Sample:
    where: str  # "shard.tar:key", for messages
    key: str  # the sample's name in the set (keys are unique across shards, as img2dataset writes them)
    image: bytes | None
    captions: list[str]
    problem: str | None = None  # set when the sample is bad before decoding
    image_ext: str = ""  # the image member's extension, e.g. "jpg"
    shard: int = -1  # the position of its shard in the list read


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
    for shard, path in enumerate(paths):
        group: dict[str, bytes] = {}
        key = None
        try:
            with tarfile.open(path, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    name_key, ext = split_key(member.name)
                    if name_key != key and key is not None:
                        yield replace(_sample(path, key, group, seen, need_caption), shard=shard)
                        group = {}
                    key = name_key
                    limit = MAX_IMAGE_BYTES if ext in IMAGE_EXTENSIONS else MAX_TEXT_BYTES
                    if member.size > limit:  # skipped unread: the stream moves past it
                        group[TOO_BIG] = f"{ext} member of {member.size:,} bytes (limit {limit:,})".encode()
                        continue
                    group[ext] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            if key is not None:  # the last whole group before the damage
                yield Sample(f"{path.name}:{key}", key, None, [], f"shard ends early ({type(e).__name__}: {e})",
                             shard=shard)
                key = None
            else:
                yield Sample(path.name, "", None, [], f"not a readable tar ({type(e).__name__}: {e})", shard=shard)
        if key is not None:
            yield replace(_sample(path, key, group, seen, need_caption), shard=shard)


def _sample(path: Path, key: str, group: dict[str, bytes], seen: set[str], need_caption: bool = True) -> Sample:
    where = f"{path.name}:{key}"
    if TOO_BIG in group:
        return Sample(where, key, None, [], f"too large: {group[TOO_BIG].decode()}")
    ext = next((e for e in IMAGE_EXTENSIONS if e in group), "")
    image = group.get(ext)
    try:
        captions = _captions(group)
    except (UnicodeError, ValueError) as e:
        return Sample(where, key, None, [], f"caption unreadable ({type(e).__name__}: {e})")
    except RecursionError:
        return Sample(where, key, None, [], "caption unreadable (JSON nested too deeply to read)")
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
        captions = [c.strip() for c in found if isinstance(c, str) and c.strip()] if isinstance(found, list) else []
        for caption in captions:  # JSON's "\ud800" escape makes a lone surrogate: half a character, no text
            caption.encode("utf-8")
        return captions
    return []


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
