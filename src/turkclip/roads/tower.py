"""The text-tower road: CLIP's text tower swapped for a pretrained multilingual encoder + mean pooling + a projection
into CLIP's embedding space, aligned to the frozen image tower (the road of M-CLIP and sentence-transformers'
multilingual CLIP).

What trains is `text_train`: the projection only (`head`), LoRA on the encoder's attention (`lora`), or every weight
(`full`); with `text_layers`, only the encoder's top layers (their input is remembered per sentence: tower_prefix.py).
The projection head, the encoder and the temperature each have their own learning rate, and the head may start at
the least-squares map to the teacher (`head_init="lstsq"`, head_init.py).
It learns from image–caption pairs (contrastive and/or distillation, `Objective`) and/or from parallel sentences:
both sides of a (base, new) pair towards the teacher's embedding of the base side, by the squared distance of
normalised vectors (as M-CLIP and sentence-transformers' multilingual distillation).
Output: a sentence-transformers folder (encoder, pooling, the Dense projection) plus what it is aligned to.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from turkclip.embedding.embed import autocast, eval_mode
from turkclip.errors import TurkclipError
from turkclip.roads import sentence_folder
from turkclip.roads.head_init import least_squares_head
from turkclip.roads.loss import distill_loss
from turkclip.roads.optimizer import param_groups
from turkclip.roads.road import Objective, Road, Step, TrainingData
from turkclip.roads.settings import LoraSettings
from turkclip.roads.text_prefix import FullText
from turkclip.roads.text_tower import new_text_tower, swap_text_tower
from turkclip.roads.tower_prefix import TowerPrefix


class TowerRoad(Road):
    name = "tower"
    saved_as = "text tower (a sentence-transformers folder)"
    text_only = True  # the image tower is the base's, frozen

    def __init__(self, text_model: str, text_train: str = "lora", lora: LoraSettings = LoraSettings(),
                 objective: Objective = Objective(), head_lr: float | None = None, encoder_lr: float | None = None,
                 scale_lr: float | None = None, text_layers: int | None = None, head_init: str = "random",
                 parallel_weight: float = 1.0):
        super().__init__(objective)
        self.text_model, self.text_train, self.lora = text_model, text_train, lora
        self.head_lr, self.encoder_lr, self.scale_lr = head_lr, encoder_lr, scale_lr
        self.text_layers, self.head_init, self.parallel_weight = text_layers, head_init, parallel_weight
        self.prefix: TowerPrefix | None = None

    def check(self) -> None:
        super().check()
        if self.lora.layers is not None:
            raise TurkclipError("--lora-layers is for CLIP's own text tower; with a --text-model, --text-layers N trains"
                                " the top N layers of the encoder")
        if self.text_layers is not None and self.text_train == "head":
            raise TurkclipError("--text-layers picks the encoder layers that train; with --text-train head none does"
                                " (use --text-train lora or full)")
        if self.head_init == "lstsq" and sentence_folder.is_tower(self.text_model):
            raise TurkclipError(f"--head-init lstsq starts a new projection head, but {self.text_model} is a tower"
                                " turkclip trained (trained further, it keeps its head): leave --head-init out")

    # --- setting up ------------------------------------------------------------------------------------------------
    def _teacher(self, clip, data: TrainingData, sentences: list[str] = ()):
        """Besides the captions' teacher (Road._teacher), the base-language side of every parallel pair."""
        return super()._teacher(clip, data, sorted({base for base, _ in data.parallel}))

    def _trainable(self, clip, data: TrainingData):
        tower = new_text_tower(self.text_model, clip.model.config.projection_dim)
        tower.prepare_training(self.text_train, self.lora, self.text_layers)
        clip = swap_text_tower(clip, tower, source=self.text_model)
        # The temperature trains only with a contrastive loss: distillation and parallel sentences have none.
        clip.model.logit_scale.requires_grad_(data.train is not None and self.objective.kind != "distill")
        clip.model.to(data.device)
        if self.text_layers is not None:  # each sentence's lower layers once, when first met (the head fit's are kept)
            self.prefix = TowerPrefix(tower, self.text_layers, data.device, data.precision)
        if self.head_init == "lstsq":
            self._fit_head(tower, data)
        return clip

    def _fit_head(self, tower, data: TrainingData) -> None:
        """The projection at the least-squares map from pooled features to the teacher: both sides of every parallel
        pair to its base side's embedding, and the English (rehearsal) captions to their own."""
        texts = [s for pair in data.parallel for s in pair]
        english = [c for caps in data.rehearsal or [] for c in caps] if self.teacher is not None else []
        english = [c for c in english if c in self.teacher.row]
        if not texts and not english:
            raise TurkclipError("--head-init lstsq fits the head to the teacher's English embeddings: it needs"
                                " --parallel-captions, or --rehearsal-captions with --objective distill or mix")
        targets = self.teacher.of([base for base, _ in data.parallel for _ in range(2)] + english)
        if self.prefix is not None:
            def pooled(batch):
                return self.prefix.pooled(**self.prefix.padded(batch, data.device))
        else:
            def pooled(batch):
                return tower.pooled(**{k: v.to(data.device) for k, v in tower.tokenize(batch).items()})
        with torch.no_grad(), eval_mode(tower), autocast(data.device, data.precision):
            least_squares_head(tower.dense, pooled, texts + english, targets)

    def text_path(self, data: TrainingData):
        return self.prefix or FullText(self.clip.text)

    def param_groups(self, net: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
        """Three parts, each at its own peak learning rate: the projection head (new, or a trained tower's), the
        encoder (pretrained: LoRA or every weight) and the temperature."""
        tower = self.clip.model.tower
        parts = {"head": (tower.dense, self.head_lr), "encoder": (tower.encoder, self.encoder_lr)}
        groups = [g for module, part_lr in parts.values()
                  for g in param_groups(module.named_parameters(), weight_decay, part_lr or lr)]
        scale = self.clip.model.logit_scale
        if scale.requires_grad:
            groups.append({"params": [scale], "weight_decay": 0.0, "lr": self.scale_lr or lr})
        return groups

    # --- every step ------------------------------------------------------------------------------------------------
    def loss(self, step: Step) -> torch.Tensor:
        """The image–caption objective on the caption rows (Road.loss), plus `parallel_weight` × the distance of the
        parallel sentences' rows to their teacher targets."""
        pairs = [i for i, it in enumerate(step.items) if it.target is not None]
        if not pairs:
            return super().loss(step)
        rows = torch.tensor(pairs, device=step.text.device)
        target, _ = self.teacher.targets([step.items[i] for i in pairs], step.text.device)
        loss = self.parallel_weight * distill_loss(step.text[rows].float(), target)
        captions = [i for i, it in enumerate(step.items) if it.target is None]
        if captions:
            keep = torch.tensor(captions, device=step.text.device)
            loss = loss + super().loss(replace(step, items=[step.items[i] for i in captions], text=step.text[keep]))
        return loss

    def _write(self, folder: Path) -> None:
        self.clip.model.save_pretrained(folder)

