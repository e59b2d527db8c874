"""The full road: every weight of CLIP trains — how the offline demo pretrains its small English base.

Output: a model folder that `turkclip --model` and plain `CLIPModel.from_pretrained` load.
"""

from __future__ import annotations

from pathlib import Path

from turkclip.models.clip import save_clip
from turkclip.roads.road import Objective, Road, TrainingData


class FullRoad(Road):
    name = "full"
    saved_as = "model"

    def __init__(self, objective: Objective = Objective(), lang: str = "en"):
        super().__init__(objective)
        self.lang = lang

    def _trainable(self, clip, data: TrainingData):
        return clip  # nothing is frozen

    def _write(self, folder: Path) -> None:
        save_clip(self.clip, folder, lang=self.lang)
