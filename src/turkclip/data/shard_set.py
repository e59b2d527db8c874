"""WebDataset shards as an `ImageTextSet`, without a copy of their pixels.

The first run reads the shards once, streaming: every sample is parsed, its image decoded (so a bad one is
counted before training starts, as `--skip-bad-images` promises) and handed to an optional `sink` — the
image-embedding bank of text-only training and evaluation embeds it right there — and then dropped. What is
cached is the metadata: keys, captions, bad samples and where each shard's samples start
(`shardset-<key>.json`, about 100 bytes a sample). The set's pixels are then a `ShardImages`: read in order, they
are decoded again from the tars as they stream past, so nothing of size N×image is ever held or written.

`pixel_store=True` (`--pixel-store`) decodes into the on-disk pixel store instead (150 KB a sample at 224 px): for
a small set that both-tower training reads for many epochs, where reading rows back beats decoding again.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from turkclip import cache
from turkclip.atomic import atomic_path
from turkclip.cache_folder import touch, written
from turkclip.data.dataset import ImageTextSet
from turkclip.data.images import Preprocess, decode_in_order, try_decode
from turkclip.data.pixel_store import open_store, write_store
from turkclip.data.shards import Sample, expand, read_samples
from turkclip.errors import TurkclipError
from turkclip.progress import bar as progress_bar


class Sink(Protocol):
    """Takes each usable image of a scan, in order (uint8 [3, S, S]); `close()` once all have come."""

    def add(self, image: np.ndarray) -> None: ...

    def close(self) -> None: ...


class ShardImages:
    """uint8 pixels [N, 3, S, S] of a shard set's usable samples, decoded from the tars when read.

    Reads are contiguous slices `[a:b]` (or one image, `[i]`), as a pass over the set makes them (embedding, a
    process's share): a slice that starts where the last one stopped streams on; any other opens the shard it
    starts in and skips to it without decoding. `fingerprint` names the shards' contents (their cache key) for the
    caches built on them."""

    def __init__(self, paths: list[Path], keys: list[str], starts: list[int], size: int, fingerprint: str):
        self.paths, self.keys, self.starts, self.size = paths, keys, starts, size
        self.fingerprint = fingerprint
        self._cursor: tuple[int, Iterator[np.ndarray]] | None = None  # (next index, its stream)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int):
            return self[key : key + 1][0]
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("shard images are read in order, in contiguous slices (pass --pixel-store to index"
                            " them at random)")
        start, stop, _ = key.indices(len(self))
        stop = max(start, stop)
        stream = self._cursor[1] if self._cursor is not None and self._cursor[0] == start else self.stream(start)
        self._cursor = None  # until the read succeeds: a stream that raised is not continued
        rows = [next(stream) for _ in range(stop - start)]
        self._cursor = (stop, stream)
        if not rows:
            return torch.empty((0, 3, self.size, self.size), dtype=torch.uint8)
        return torch.from_numpy(np.stack(rows))

    def stream(self, start: int = 0) -> Iterator[np.ndarray]:
        """Decoded images from index `start` on, in order (a thread pool decodes ahead)."""
        return decode_in_order(self.samples(start), lambda job: self.decode(job[1], job[0]))

    def decode(self, data: bytes, index: int) -> np.ndarray:
        """Image `index` from its bytes; it decoded when the shards were scanned, so a failure means its shard
        changed since (a one-line TurkclipError)."""
        image = try_decode(data, self.size)
        if isinstance(image, str):
            raise TurkclipError(f"sample {self.keys[index]!r} no longer decodes ({image}); its shard changed after"
                                " it was read: run again to read the shards afresh")
        return image

    def samples(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(index, image bytes) of the usable samples from `start` on, matched to the scan's keys in order."""
        shard = bisect.bisect_right(self.starts, start) - 1
        for s in range(shard, len(self.paths)):
            yield from self.shard_samples(s, start)

    def shard_samples(self, s: int, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(index, image bytes) of shard `s`'s usable samples with index >= `start`. The scan's keys of the shard,
        in order, pick them out (a bad sample is not among them; a repeated key comes after the one it repeats)."""
        first, end = self.starts[s], self.starts[s + 1]
        index = first
        if index >= end:
            return
        for sample in read_samples([self.paths[s]]):
            if sample.key == self.keys[index] and sample.image is not None:
                if index >= start:
                    yield index, sample.image
                index += 1
                if index == end:
                    return
        raise TurkclipError(f"{self.paths[s]} has fewer samples than when it was read: run again to read it afresh")

    def __getstate__(self):
        return {**self.__dict__, "_cursor": None}  # a worker process opens its own stream


def load_shard_set(pattern: str, lang: str, preprocess: Preprocess, skip_bad: bool = False,
                   cache_dir: Path | None = None, pixel_store: bool = False, sink=None) -> ImageTextSet:
    """The shards in `pattern` as a set: images streamed from the tars (`ShardImages`), or, with `pixel_store`,
    decoded into the pixel store. `sink(fingerprint)` may return a `Sink` that sees every image of the first read
    (None: nothing to do); it is asked only when the shards are read, not when their metadata is cached."""
    paths = expand(pattern)
    key = cache.make_key("shards-v2", cache.files_fingerprint(paths), preprocess.size)
    with cache.main_process_first():  # several processes: one reads the shards, the others its cache entry
        if pixel_store:
            found = open_store(cache_dir, key, preprocess.size) or _decode(paths, key, preprocess.size, cache_dir)
            pixels, meta = found
        else:
            meta = _read_meta(cache_dir, key)
            if meta is None:
                meta = scan(paths, preprocess.size, sink(key) if sink else None)
                _write_meta(cache_dir, key, meta)
            pixels = ShardImages(paths, meta["keys"], meta["starts"], preprocess.size, key)
    bad = [tuple(b) for b in meta["bad"]]
    if not meta["keys"]:
        first = f" (first: {bad[0][0]}: {bad[0][1]})" if bad else ""
        raise TurkclipError(f"no usable samples in {pattern!r}{first}")
    if bad and not skip_bad:
        raise TurkclipError(f"{len(bad)} of {len(bad) + len(meta['keys'])} samples in {pattern!r} are bad"
                            f" (first: {bad[0][0]}: {bad[0][1]}); pass --skip-bad-images to leave them out")
    return ImageTextSet(filenames=meta["keys"], pixels=pixels, captions=meta["captions"], lang=lang, skipped=bad)


def scan(paths: list[Path], size: int, sink: Sink | None = None) -> dict:
    """Read every shard once: the metadata of its samples (keys, captions, bad ones, where each shard starts in
    the set) and, for `sink`, each usable image decoded. Images are not kept."""
    meta = {"keys": [], "captions": [], "bad": [], "starts": [0] * (len(paths) + 1)}

    def decode(s: Sample):  # on a thread pool; the sample's bytes are dropped once decoded
        return Sample(s.where, s.key, None, s.captions, shard=s.shard), s.problem or try_decode(s.image, size)

    done = decode_in_order(read_samples(paths), decode)
    for sample, image in progress_bar(done, desc=f"reading {len(paths)} shard{'s' * (len(paths) > 1)}", unit="img",
                                      leave=False):
        if isinstance(image, str):
            meta["bad"].append((sample.where, image))
            continue
        meta["keys"].append(sample.key)
        meta["captions"].append(sample.captions)
        meta["starts"][sample.shard + 1] = len(meta["keys"])
        if sink is not None:
            sink.add(image)
    for i in range(1, len(meta["starts"])):  # a shard without usable samples starts where the one before ends
        meta["starts"][i] = max(meta["starts"][i], meta["starts"][i - 1])
    if sink is not None:
        sink.close()
    return meta


def _read_meta(folder: Path | None, key: str) -> dict | None:
    path = Path(folder) / f"shardset-{key}.json" if folder is not None else None
    if path is None or not path.is_file():
        return None
    touch(path)
    return json.loads(path.read_text(encoding="utf-8"))


def _write_meta(folder: Path | None, key: str, meta: dict) -> None:
    if folder is None:
        return
    with atomic_path(Path(folder) / f"shardset-{key}.json") as tmp:
        tmp.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    written(Path(folder) / f"shardset-{key}.json")


def _decode(paths: list[Path], key: str, size: int, cache_dir: Path | None):
    """Decode every sample into the pixel store (`--pixel-store`); its metadata rides in the store's entry."""
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
