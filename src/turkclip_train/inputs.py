"""Where a run's images and captions come from: a captions file beside an images folder, or WebDataset shards.

Both end as the same `ImageTextSet`: a folder's pixels decoded once into the disk-backed pixel store, shards'
pixels decoded from the tars as they are read (or, with --pixel-store, into the store too). A `BankWriter`
embeds the shards' images during their first read, for runs that need only the frozen image tower's bank.
"""

from __future__ import annotations

from pathlib import Path

from turkclip.data.captions import read_captions
from turkclip.data.dataset import ImageTextSet, load_image_text_set
from turkclip.data.images import Preprocess
from turkclip.data.shard_set import load_shard_set
from turkclip.errors import TurkclipError


def check_source(captions: str | None, images: str | None, shards: str | None) -> None:
    """Exactly one source: --captions with --images, or --shards."""
    if shards and (captions or images):
        raise TurkclipError("give --shards, or --captions with --images, not both")
    if not shards and not (captions and images):
        raise TurkclipError("say where the data is: --captions FILE with --images FOLDER, or --shards 'data/{00000..00009}.tar'")


def training_sets(cfg, preprocess: Preprocess, cache_dir: Path | None,
                  bank=None) -> tuple[ImageTextSet, ImageTextSet | None]:
    """(train, val or None) for a `TrainConfig`: the captions file's splits, or --shards and --val-shards.
    `bank` (an `embed.BankWriter`): shards are embedded by it as they are first read."""
    check_source(cfg.captions, cfg.images, cfg.shards)
    if cfg.shards:
        sink = bank.sink if bank is not None else None
        train = load_shard_set(cfg.shards, cfg.lang, preprocess, cfg.skip_bad_images, cache_dir, cfg.pixel_store, sink)
        val = load_shard_set(cfg.val_shards, cfg.lang, preprocess, cfg.skip_bad_images, cache_dir, cfg.pixel_store,
                             sink) if cfg.val_shards else None
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
