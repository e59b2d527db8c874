"""The text-tower road: CLIP's text tower swapped for a pretrained multilingual encoder + mean pooling + a projection
into CLIP's embedding space, aligned to the frozen image tower (the road of M-CLIP and sentence-transformers'
multilingual CLIP).

What trains is `text_train`: the projection only (`head`), LoRA on the encoder's attention (`lora`), or every weight
(`full`); the projection head, the encoder and the temperature each have their own learning rate.
Output: a sentence-transformers folder (encoder, pooling, the Dense projection) plus what it is aligned to.
"""

from __future__ import annotations

from pathlib import Path

import torch

from turkclip.errors import TurkclipError
from turkclip.roads.optimizer import param_groups
from turkclip.roads.road import Objective, Road, TrainingData
from turkclip.roads.settings import LoraSettings
from turkclip.roads.text_tower import new_text_tower, swap_text_tower


class TowerRoad(Road):
    name = "tower"
    saved_as = "text tower (a sentence-transformers folder)"
    text_only = True  # the image tower is the base's, frozen

    def __init__(self, text_model: str, text_train: str = "lora", lora: LoraSettings = LoraSettings(),
                 objective: Objective = Objective(), head_lr: float | None = None, encoder_lr: float | None = None,
                 scale_lr: float | None = None):
        super().__init__(objective)
        self.text_model, self.text_train, self.lora = text_model, text_train, lora
        self.head_lr, self.encoder_lr, self.scale_lr = head_lr, encoder_lr, scale_lr

    def check(self) -> None:
        super().check()
        if self.lora.layers is not None:
            raise TurkclipError("--lora-layers is for CLIP's own text tower, not a --text-model")

    def _trainable(self, clip, data: TrainingData):
        tower = new_text_tower(self.text_model, clip.model.config.projection_dim)
        tower.prepare_training(self.text_train, self.lora)
        clip = swap_text_tower(clip, tower, source=self.text_model)
        clip.model.logit_scale.requires_grad_(self.objective.kind != "distill")  # distillation has no temperature
        return clip

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

    def _write(self, folder: Path) -> None:
        self.clip.model.save_pretrained(folder)
