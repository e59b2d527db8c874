"""`Road`: one way to teach CLIP a new language, as one object the training loop talks to.

The loop (turkclip_train/train.py) calls, in order:
  road.check()                      flag combinations that cannot work, before any data is read
  road.build(clip, data)            freeze the base, add what trains; returns the `Clip` whose `.model` trains
  road.text_path(data)              how a batch's captions become the tower's inputs (whole tower, cached prefix …)
  road.param_groups(net, ...)       what the optimizer updates, each part at its own learning rate
  road.loss(step)                   every step: distillation towards the teacher and/or contrastive loss
  road.save(folder)                 the trained road as a folder (at the best epoch)
  road.finish(folder, records)      anything written once at the end (a model card)
The loop itself never asks which road it is on.

`Objective` is the part of the loss every road shares: contrastive (in-batch or against the frozen image bank),
distillation towards the base CLIP's English text embeddings, or a mix of both.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from turkclip.errors import TurkclipError
from turkclip.roads.loss import bank_loss, clip_loss, distill_loss
from turkclip.roads.optimizer import param_groups
from turkclip.roads.teacher import Teacher, build_teacher
from turkclip.roads.text_prefix import FullText


@dataclass
class TrainingData:
    """What a road may need from the run to set itself up."""

    train: object  # turkclip.data.dataset.ImageTextSet: the train split (captions per image, their language); None:
    # no images at all (the text-tower road on parallel sentences alone)
    rehearsal: list[list[str]] | None  # base-language (English) captions per train image, or None
    rehearsal_lang: str
    device: torch.device
    precision: str  # resolved: fp32 | bf16 | fp16
    cache_dir: Path | None
    flip: bool = False  # --augment flip: items may be mirrored (their teacher targets must be too)
    parallel: list[tuple[str, str]] = field(default_factory=list)  # (base, new) sentence pairs, --parallel-captions


@dataclass
class Step:
    """One micro-batch's outputs, for `Road.loss`."""

    items: list  # turkclip.data.sampling.Item: which caption (and image, language, mirroring) each row is
    text: torch.Tensor  # caption embeddings [B, D] (projected, not normalised)
    image: torch.Tensor | None  # image embeddings [B, D], or None when the image tower is frozen (see `bank`)
    logit_scale: torch.Tensor
    bank: torch.Tensor | None = None  # frozen image embeddings of every train image (image tower frozen)
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None  # rows from every process, with gradients


@dataclass(frozen=True)
class Objective:
    kind: str = "contrastive"  # contrastive | distill | mix
    distill_weight: float = 0.5  # weight of distillation with "mix"
    negatives: str = "batch"  # batch | bank (every cached train image; needs a frozen image tower)

    @property
    def needs_teacher(self) -> bool:
        return self.kind != "contrastive"


class Road:
    name = "road"
    saved_as = "model"  # what `save` writes, in words
    text_only = False  # True: the image tower is frozen, so the loop embeds every image once (the bank)

    def __init__(self, objective: Objective = Objective()):
        self.objective = objective
        self.teacher: Teacher | None = None
        self.clip = None  # the `Clip` being trained, set by `build`

    # --- setting up ------------------------------------------------------------------------------------------
    def check(self) -> None:
        if self.objective.negatives == "bank" and not self.text_only:
            raise TurkclipError("--negatives bank needs a frozen image tower (--lora-towers text, or a --text-model)")

    def build(self, clip, data: TrainingData):
        """Teacher first (the base CLIP's own text tower, before anything changes it), then the trainable model."""
        self.teacher = self._teacher(clip, data)
        self.clip = self._trainable(clip, data)
        return self.clip

    def _teacher(self, clip, data: TrainingData, sentences: list[str] = ()) -> Teacher | None:
        """The base CLIP's own text tower on the English captions of the train images (when the objective distils
        them) and on `sentences`; None when nothing is distilled."""
        distils_images = self.objective.needs_teacher and data.train is not None
        if distils_images and data.rehearsal is None:
            raise TurkclipError("distillation (--objective distill or mix) needs --rehearsal-captions: English captions"
                                " of the same images, which the base CLIP's text tower embeds as the teacher")
        if not distils_images and not sentences:
            return None
        return build_teacher(clip, data.rehearsal if distils_images else None, data.rehearsal_lang, data.device,
                             data.precision, data.cache_dir, flip=data.flip, sentences=sentences)

    def _trainable(self, clip, data: TrainingData):
        raise NotImplementedError

    def text_path(self, data: TrainingData):
        return FullText(self.clip.text)

    def param_groups(self, net: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
        return param_groups(net.named_parameters(), weight_decay, lr)

    # --- every step ------------------------------------------------------------------------------------------
    def loss(self, step: Step) -> torch.Tensor:
        obj, text = self.objective, step.text
        loss = 0.0
        if obj.needs_teacher:  # distillation: each caption towards the teacher's English embedding(s)
            target, has = self.teacher.targets(step.items, text.device)
            weight = 1.0 if obj.kind == "distill" else obj.distill_weight
            loss = weight * distill_loss(text[has].float(), target[has]) if has.any() else 0.0 * text.sum()
            if obj.kind == "distill":
                return loss
        image_idx = torch.tensor([it.image for it in step.items], device=text.device)
        image = step.bank[image_idx] if step.image is None else step.image
        if step.gather is not None:  # negatives from every process; gradients flow back through the gather
            text, image, image_idx = step.gather(text), step.gather(image), step.gather(image_idx)
        if obj.negatives == "bank":  # every process scores the whole global batch against the same bank
            return loss + bank_loss(text.float(), step.bank, image_idx, step.logit_scale)
        return loss + clip_loss(text.float(), image.float(), step.logit_scale)

    # --- the output ------------------------------------------------------------------------------------------
    def save(self, out: Path) -> None:
        """Write the trained road into `out`: first into a scratch folder, then file by file into place."""
        tmp = out / ".saving"
        shutil.rmtree(tmp, ignore_errors=True)
        self._write(tmp)
        for f in tmp.iterdir():
            if f.is_dir() and (out / f.name).is_dir():  # a module subfolder (1_Pooling, 2_Dense) of an earlier epoch
                shutil.rmtree(out / f.name)
            os.replace(f, out / f.name)
        tmp.rmdir()

    def _write(self, folder: Path) -> None:
        raise NotImplementedError

    def finish(self, out: Path, records: list[dict]) -> None:
        """Called once, after training, with the run's metrics records."""
