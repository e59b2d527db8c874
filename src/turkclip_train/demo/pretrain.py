"""Demo stage 1: the stand-in for OpenAI's pretraining, cached on disk.

A small CLIP is trained from scratch, every weight, on the English captions of the synthetic
world only, by the product's own training loop (`train` with `road="full"`). The tokenizer is
learnt on English and Turkish captions alike, as OpenAI's BPE was learnt on multilingual web
text: Turkish words get word pieces of their own, whose embeddings English-only training never
updates. World, tokenizer and model live in the user cache under a key of everything they are
made from, so a second `turkclip demo` (any --output) skips this stage; an interrupted stage 1
continues from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from turkclip import cache
from turkclip.models.architectures import ARCHITECTURES, init_model
from turkclip_train import checkpoint
from turkclip_train.config import TrainConfig
from turkclip_train.train import Interrupted, train

from .world import VERSION as WORLD_VERSION
from .world import WorldFiles, build_tokenizer, build_world

VERSION = 2  # 2: no weight decay on biases, LayerNorms, logit scale; logit scale capped at ln 100. Bump when stage 1 changes in a way its settings below do not show


@dataclass(frozen=True)
class Stage1:
    """The synthetic world and the pretraining recipe: everything the cached base model depends on."""

    n_train: int
    n_val: int
    n_test: int
    architecture: str  # a name in turkclip.models.architectures.ARCHITECTURES; scenes are drawn at its image size
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float


@dataclass
class Base:
    world: WorldFiles
    folder: Path  # the pretrained English CLIP: load_clip(folder) / CLIPModel.from_pretrained(folder)
    cached: bool  # True: taken from the cache, not trained in this run
    summary: dict  # what `train` returned when stage 1 ran


def pretrain(stage: Stage1, seed: int, progress: bool = True) -> Base:
    key = cache.make_key("demo-stage1", VERSION, WORLD_VERSION, seed, asdict(stage), ARCHITECTURES[stage.architecture])
    root = cache.default_dir() / "demo" / f"seed{seed}-{key}"
    image_size = ARCHITECTURES[stage.architecture]["vision_config"]["image_size"]
    world = build_world(root / "world", seed, stage.n_train, stage.n_val, stage.n_test, image_size)
    folder, done = root / "stage1", root / "stage1.json"
    if done.exists():
        return Base(world, folder, True, json.loads(done.read_text()))

    if not (folder / checkpoint.FILENAME).exists():  # a fresh start, not the continuation of an interrupted one
        texts = [s["raw"] for path in (world.english, world.turkish)
                 for image in json.loads(path.read_text(encoding="utf-8"))["images"] for s in image["sentences"]]
        build_tokenizer(texts, root / "tokenizer")
        init_model(stage.architecture, root / "tokenizer", root / "init", seed)
    print(f"stage 1: pretraining a small CLIP on English captions only ({stage.n_train} scenes, {stage.epochs} epochs;"
          f" cached in {root} for later runs)")
    try:
        summary = train(TrainConfig(
            captions=str(world.english), images=str(world.images), output=str(folder), model=str(root / "init"),
            lang="en", road="full", epochs=stage.epochs, batch_size=stage.batch_size, lr=stage.lr,
            weight_decay=stage.weight_decay, precision="fp32", seed=seed, resume=True, progress=progress))
    except Interrupted:
        raise Interrupted("interrupted during stage 1; run the same `turkclip demo` again to continue it") from None
    shutil.rmtree(folder / checkpoint.SUBFOLDER)  # done: the optimizer state is no longer needed
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, done)  # written last: a half-trained stage 1 is never taken for a finished one
    return Base(world, folder, False, summary)
