"""Both-tower training on WebDataset shards: each epoch's images decoded by DataLoader workers as the shards stream.

This is how open_clip reads WebDataset: worker processes split the shards, each reads its shards in turn and
decodes their samples, a buffer shuffles samples within a window, and the epoch's shard order is shuffled. Here
the order is also a pure function of (seed, epoch), as `sampling.epoch_batches` promises, so that a resumed run
sees the same batches, whatever the number of workers:

* the epoch's shard order is a permutation drawn from (seed, epoch); stream s of `STREAMS` reads every
  `STREAMS`-th shard of it, and its images are shuffled within windows of `WINDOW` consecutive samples (it holds
  at most that many undecoded samples); a process visits the streams' images one from each in turn;
* process r of a run of R decodes the images whose index is r modulo R (every process reads the same tars, which
  costs little beside decoding, so each process gets the same number of images every epoch);
* worker w of W decodes streams w, w + W, ... (each stream reads its own shards, one after another).

`visit_order` is that order for the whole run; `sampling.epoch_batches(order=...)` cuts it into batches whose share
for process r is exactly the images process r decodes. `pixel_feed` then yields each micro-batch's pixels: from
the workers for shards; from the pixel store (or a tensor) for any other set, indexed directly. Images arrive
tagged with their index and are put in batch order in the main process, so the pixels are exactly the store's.
"""

from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from turkclip.data.augment import AugmentPolicy, augment_rows, batch_pixels
from turkclip.data.shard_set import ShardImages
from turkclip.errors import TurkclipError

STREAMS = 8  # shard streams an epoch interleaves; workers share them out, so the order does not depend on their number
# Samples a stream shuffles among: it holds at most their JPEG bytes (~8 MB at 30 KB a sample); with the 8 streams
# interleaved an epoch mixes ~2000 samples at a time, as open_clip's sample buffer does.
WINDOW = 256


def default_workers() -> int:
    """Decoding processes per training process: half the cores (the other half run the model), 1 to 4."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def visit_order(pixels, seed: int, epoch: int, batch_size: int, world: int = 1) -> list[int] | None:
    """The order in which an epoch visits the images of a streamed set (None for a set read at random: then
    `epoch_batches` draws its own). `batch_size` is per process; global batch k holds the k-th `batch_size` images
    of every process in turn."""
    if not isinstance(pixels, ShardImages):
        return None
    per_rank = [_interleave([order for _, order in _streams(pixels, seed, epoch, r, world)]) for r in range(world)]
    order = []
    for start in range(0, max(len(o) for o in per_rank), batch_size):
        for o in per_rank:
            order += o[start : start + batch_size]
    return order


def pixel_feed(pixels, micro_batches: list, policy: AugmentPolicy, seed: int, epoch: int, rank: int = 0,
               world: int = 1, workers: int | None = None) -> Iterator[torch.Tensor]:
    """uint8 pixels of each micro-batch (a list of `sampling.Item`) in turn, augmented as `batch_pixels` does.
    `workers`: decoding processes (default `default_workers()`; 0: decode in this one)."""
    if not isinstance(pixels, ShardImages):
        return (batch_pixels(pixels, items, policy, seed, epoch) for items in micro_batches)
    workers = default_workers() if workers is None else workers
    wanted = {it.image for items in micro_batches for it in items}  # a resumed epoch: what is left of it
    streams = [(shards, [i for i in order if i in wanted])
               for shards, order in _streams(pixels, seed, epoch, rank, world)]
    loader = DataLoader(_EpochImages(pixels, streams, max(1, workers)), batch_size=None, num_workers=workers,
                        prefetch_factor=16 if workers else None)
    return _in_batch_order((pair for pairs in loader for pair in pairs), micro_batches, policy, seed, epoch)


def _in_batch_order(arrivals, micro_batches, policy, seed, epoch) -> Iterator[torch.Tensor]:
    """Images arrive as (index, pixels) from the workers in turn; each micro-batch takes its own, in its order."""
    arrived: dict[int, torch.Tensor] = {}
    for items in micro_batches:
        for it in items:
            while it.image not in arrived:
                index, image = next(arrivals)
                if isinstance(image, str):
                    raise TurkclipError(image)
                arrived[index] = image
        rows = torch.stack([arrived.pop(it.image) for it in items])
        if policy.active:
            rows = augment_rows(rows, [it.image for it in items], [it.flip for it in items], policy, seed, epoch=epoch)
        yield rows


class _EpochImages(IterableDataset):
    """One epoch's images for one process: worker w of `workers` decodes streams w, w + workers, ..., in turn."""

    def __init__(self, pixels: ShardImages, streams: list[tuple[list[int], list[int]]], workers: int):
        self.pixels, self.streams, self.workers = pixels, streams, workers

    def __iter__(self):
        """The k-th image of each of this worker's streams, as one list per k: a DataLoader takes one item from each
        worker in turn, so every worker, whatever its number of streams, stays at the same k as the others."""
        info = get_worker_info()
        mine = self.streams[info.id if info is not None else 0 :: self.workers]
        decoded = [self._decode(*stream) for stream in mine]
        for k in range(max((len(order) for _, order in mine), default=0)):
            yield [next(stream) for stream, (_, order) in zip(decoded, mine) if k < len(order)]

    def _decode(self, shards: list[int], order: list[int]):
        """Read the shards in turn, keep the wanted samples' bytes until their turn comes (at most a window's),
        decode each then. A problem is handed on as text: the main process raises it, as one line."""
        want, held, position = set(order), {}, 0
        for index, data in (pair for s in shards for pair in self.pixels.shard_samples(s)):
            if index in want:
                held[index] = data
            while position < len(order) and order[position] in held:
                index = order[position]
                try:
                    yield index, torch.from_numpy(self.pixels.decode(held.pop(index), index))
                except TurkclipError as e:
                    yield index, str(e)
                position += 1


def _streams(pixels: ShardImages, seed: int, epoch: int, rank: int, world: int) -> list[tuple[list[int], list[int]]]:
    """(shards, image indices) of each stream for process `rank`: the shards it reads, in turn, and the images it
    yields, in order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    shards = torch.randperm(len(pixels.paths), generator=g).tolist()
    out = []
    for s in range(STREAMS):
        mine = shards[s::STREAMS]
        images = [i for shard in mine for i in range(pixels.starts[shard], pixels.starts[shard + 1])
                  if i % world == rank]
        shuffled = []
        for start in range(0, len(images), WINDOW):
            window = images[start : start + WINDOW]
            shuffled += [window[j] for j in torch.randperm(len(window), generator=g).tolist()]
        out.append((mine, shuffled))
    return out


def _interleave(streams: list[list[int]]) -> list[int]:
    """One from each stream in turn, skipping the ones that ran out."""
    out, longest = [], max((len(s) for s in streams), default=0)
    for k in range(longest):
        out += [s[k] for s in streams if k < len(s)]
    return out
