"""Where a run's images and captions come from: a captions file beside an images folder, WebDataset shards, or
(evaluation) a published benchmark's files.

All end as the same `ImageTextSet` (pixels decoded once into the disk-backed pixel store), so
nothing after loading knows which it was.
"""

from __future__ import annotations

from pathlib import Path

from turkclip.data.benchmarks import BenchmarkSet
from turkclip.data.captions import read_captions
from turkclip.data.dataset import ImageTextSet, load_image_text_set
from turkclip.data.images import Preprocess
from turkclip.data.shards import load_shard_set
from turkclip.errors import TurkclipError


def check_source(captions: str | None, images: str | None, shards: str | None) -> None:
    """Exactly one source: --captions with --images, or --shards."""
    if shards and (captions or images):
        raise TurkclipError("give --shards, or --captions with --images, not both")
    if not shards and not (captions and images):
        raise TurkclipError("say where the data is: --captions FILE with --images FOLDER, or --shards 'data/{00000..00009}.tar'")


def training_sets(cfg, preprocess: Preprocess, cache_dir: Path | None) -> tuple[ImageTextSet, ImageTextSet | None]:
    """(train, val or None) for a `TrainConfig`: the captions file's splits, or --shards and --val-shards."""
    check_source(cfg.captions, cfg.images, cfg.shards)
    if cfg.shards:
        train = load_shard_set(cfg.shards, cfg.lang, preprocess, cfg.skip_bad_images, cache_dir)
        val = load_shard_set(cfg.val_shards, cfg.lang, preprocess, cfg.skip_bad_images,
                             cache_dir) if cfg.val_shards else None
        return train, val
    if cfg.val_shards:
        raise TurkclipError("--val-shards goes with --shards; with --captions the validation split is --val-split")
    captions = read_captions(cfg.captions, cfg.lang, cfg.encoding, cfg.image_column, cfg.caption_column,
                             cfg.split_column)
    train = load_image_text_set(captions.split(cfg.train_split), cfg.images, preprocess, cfg.skip_bad_images, cache_dir)
    has_val = cfg.val_split is not None and cfg.val_split in captions.splits()
    val = load_image_text_set(captions.split(cfg.val_split), cfg.images, preprocess, cfg.skip_bad_images,
                              cache_dir) if has_val else None
    return train, val


def evaluation_set(args, preprocess: Preprocess, cache_dir: Path | None) -> ImageTextSet:
    """The split `turkclip evaluate` scores: --split of --captions, or every sample of --shards."""
    check_source(args.captions, args.images, args.shards)
    if args.shards:
        return load_shard_set(args.shards, args.lang, preprocess, args.skip_bad_images, cache_dir)
    captions = read_captions(args.captions, args.lang, args.encoding, args.image_column, args.caption_column,
                             args.split_column).split(args.split)
    return load_image_text_set(captions, args.images, preprocess, args.skip_bad_images, cache_dir)


def check_benchmark_flags(args) -> None:
    """--benchmark with --root, and none of the other sources (checked before anything loads)."""
    if not args.benchmark:
        if args.root:
            raise TurkclipError("--root is the folder of a --benchmark; name the set with --benchmark")
        return
    if not args.root:
        raise TurkclipError(f"--benchmark {args.benchmark} needs --root, the folder holding its files")
    given = [flag for flag, value in (("--captions", args.captions), ("--images", args.images),
                                      ("--shards", args.shards), ("--english-captions", args.english_captions)) if value]
    if given:
        raise TurkclipError(f"--benchmark reads its own captions and images: not with {', '.join(given)}"
                            " (for another language of the set, run again with --lang)")


def benchmark_sets(bench: BenchmarkSet, preprocess: Preprocess, skip_bad: bool,
                   cache_dir: Path | None) -> tuple[ImageTextSet, ImageTextSet | None]:
    """(CLIP_benchmark's protocol: each image with its first caption, every caption of each image) on the same
    decoded images; the second is None where each image has one caption and the two are the same."""
    every = load_image_text_set(bench.every, bench.images, preprocess, skip_bad, cache_dir)
    if bench.every is bench.protocol:
        return every, None
    return every.with_captions(bench.protocol), every
