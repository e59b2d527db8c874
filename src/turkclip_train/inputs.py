"""Where a run's images and captions come from: a captions file beside an images folder, WebDataset shards, or
(evaluation) a published benchmark's files.

All end as the same `ImageTextSet`: a folder's pixels decoded once into the disk-backed pixel store, shards'
pixels decoded from the tars as they are read (or, with --pixel-store, into the store too). A `BankWriter`
embeds the shards' images during their first read, for runs that need only the frozen image tower's bank.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from turkclip.data.benchmarks import BenchmarkSet
from turkclip.data.captions import CaptionSet, read_captions
from turkclip.data.dataset import ImageTextSet, load_image_text_set
from turkclip.data.images import Preprocess
from turkclip.data.parallel import read_parallel
from turkclip.data.shard_set import load_shard_set
from turkclip.errors import TurkclipError

from .distributed import is_main_process


def check_source(captions: str | None, images: str | None, shards: str | None) -> None:
    """Exactly one source: --captions with --images, or --shards."""
    if shards and (captions or images):
        raise TurkclipError("give --shards, or --captions with --images, not both")
    if not shards and not (captions and images):
        raise TurkclipError("say where the data is: --captions FILE with --images FOLDER, or --shards 'data/{00000..00009}.tar'")


def text_only(cfg) -> bool:
    """Parallel sentences and no image source: the run reads no image at all."""
    return bool(cfg.parallel_captions) and not (cfg.captions or cfg.images or cfg.shards)


def parallel_pairs(cfg) -> list[tuple[str, str]]:
    """The (base, new) sentence pairs of --parallel-captions ([] without it); skipped bad lines are reported."""
    if not cfg.parallel_captions:
        return []
    columns = tuple(c.strip() for c in (cfg.parallel_columns or f"{cfg.rehearsal_lang},{cfg.lang}").split(","))
    if len(columns) != 2 or not all(columns):
        raise TurkclipError(f"--parallel-columns takes two names, BASE,NEW (e.g. en,tr), not {cfg.parallel_columns!r}")
    corpus = read_parallel(cfg.parallel_captions, columns, cfg.parallel_encoding, cfg.skip_bad_lines)
    if corpus.bad_lines and is_main_process():
        print(f"skipped {corpus.bad_lines} bad lines of {corpus.source} (--skip-bad-lines; first: {corpus.first_bad})",
              file=sys.stderr)
    return corpus.pairs


def training_sets(cfg, preprocess: Preprocess, cache_dir: Path | None,
                  bank=None) -> tuple[ImageTextSet, ImageTextSet | None]:
    """(train, val or None) for a `TrainConfig`: the captions file's splits, or --shards and --val-shards.
    `bank` (an `embed.BankWriter`): shards are embedded by it as they are first read."""
    check_source(cfg.captions, cfg.images, cfg.shards)
    if cfg.limit_images is not None and cfg.limit_images < 1:
        raise TurkclipError(f"--limit-images must be at least 1, not {cfg.limit_images}")
    if cfg.shards:
        if cfg.limit_images is not None:
            raise TurkclipError("--limit-images goes with --captions/--images (a shard set is read whole)")
        sink = bank.sink if bank is not None else None
        train = load_shard_set(cfg.shards, cfg.lang, preprocess, cfg.skip_bad_images, cache_dir, cfg.pixel_store, sink)
        val = load_shard_set(cfg.val_shards, cfg.lang, preprocess, cfg.skip_bad_images, cache_dir, cfg.pixel_store,
                             sink) if cfg.val_shards else None
        return train, val
    if cfg.val_shards:
        raise TurkclipError("--val-shards goes with --shards; with --captions the validation split is --val-split")
    captions = read_captions(cfg.captions, cfg.lang, cfg.encoding, cfg.image_column, cfg.caption_column,
                             cfg.split_column)
    train = load_image_text_set(_first(captions.split(cfg.train_split), cfg.limit_images), cfg.images, preprocess,
                                cfg.skip_bad_images, cache_dir)
    _note_left_out(captions, cfg.train_split, cfg.val_split)
    has_val = cfg.val_split is not None and cfg.val_split in captions.splits()
    val = load_image_text_set(_first(captions.split(cfg.val_split), cfg.limit_images), cfg.images, preprocess,
                              cfg.skip_bad_images, cache_dir) if has_val else None
    return train, val


def _first(captions: CaptionSet, n: int | None) -> CaptionSet:
    """The first `n` images of a split (--limit-images), or all of them."""
    return captions if n is None else replace(captions, records=captions.records[:n])


def _note_left_out(captions: CaptionSet, train_split: str, val_split: str | None) -> None:
    """Images in splits that neither training nor validation takes are never dropped without a word (a "test"
    split is held out on purpose and not mentioned)."""
    left = captions.left_out(train_split, val_split, "test")
    if not left or not is_main_process():
        return
    named = [k for k in left if k != "None"]
    print(f"note: {captions.source}: {sum(left.values())} images are in splits this run leaves out:"
          f" {captions.describe_splits(left)} (it trains on {train_split!r}, validates on {val_split!r})"
          + (f"; to train on them too: --train-split {','.join([train_split, *named])}" if named else "")
          + ("; images without a split are taken only by --train-split all" if "None" in left else ""),
          file=sys.stderr)


def evaluation_set(args, preprocess: Preprocess, cache_dir: Path | None, bank=None) -> ImageTextSet:
    """The split `turkclip evaluate` scores: --split of --captions, or every sample of --shards (embedded by `bank`,
    an `embed.BankWriter`, as they are first read)."""
    check_source(args.captions, args.images, args.shards)
    if args.shards:
        return load_shard_set(args.shards, args.lang, preprocess, args.skip_bad_images, cache_dir,
                              sink=bank.sink if bank is not None else None)
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
