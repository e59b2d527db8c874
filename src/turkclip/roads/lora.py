"""The LoRA road: low-rank adapters (PEFT) on CLIP's own towers, plus the token rows the base never learnt.

Output: an adapter folder (`adapter_config.json` + `adapter_model.safetensors`, turkclip's CLIPProcessor files and a
Hub model card) that `CLIPModel.from_pretrained(base).load_adapter(folder)` and `turkclip --adapter` load.
"""

from __future__ import annotations

from pathlib import Path

from turkclip.errors import TurkclipError
from turkclip.models.processor import save_processor
from turkclip.roads.adapters import attach_lora
from turkclip.roads.model_card import best_validation, write_model_card
from turkclip.roads.road import Objective, Road, TrainingData
from turkclip.roads.settings import LoraSettings
from turkclip.roads.text_prefix import FullText, PrefixText


class LoraRoad(Road):
    name = "lora"
    saved_as = "adapter"

    def __init__(self, lora: LoraSettings = LoraSettings(), token_rows: str = "none", objective: Objective = Objective(),
                 lang: str = "tr", card: dict | None = None):
        super().__init__(objective)
        self.lora, self.token_rows, self.lang = lora, token_rows, lang
        self.card = card  # model card facts (base model, datasets, settings), written by `finish`
        self.text_only = lora.towers == "text"

    def check(self) -> None:
        super().check()
        if self.lora.layers is not None and self.lora.towers != "text":
            raise TurkclipError("--lora-layers is for the text tower: it needs --lora-towers text")

    def _trainable(self, clip, data: TrainingData):
        self.lora.token_ids = self._token_rows(clip, data)
        clip.model = attach_lora(clip.model, self.lora)
        return clip

    def _token_rows(self, clip, data: TrainingData) -> list[int]:
        """Token-embedding rows to train: none, all pieces of the training captions, or only the pieces the base
        language (rehearsal captions) never uses — the ones the base model cannot have learnt."""
        if self.token_rows == "none":
            return []
        texts = [c for caps in data.train.captions for c in caps]
        rows = clip.text.token_ids(texts, data.train.lang) - set(clip.text.tokenizer.all_special_ids)
        if self.token_rows == "new":
            if data.rehearsal is None:
                raise TurkclipError("--train-token-rows new needs --rehearsal-captions (base-language captions to"
                                    " compare with)")
            rows -= clip.text.token_ids([c for caps in data.rehearsal for c in caps], data.rehearsal_lang)
        return sorted(rows)

    def text_path(self, data: TrainingData):
        """`PrefixText` with --lora-layers when only that LoRA trains (image tower frozen, no token rows): the layers
        below it are frozen, their output a function of the caption, computed once per train caption. Otherwise
        `FullText`: the whole tower every step. (Without --lora-layers the prefix would be only the embeddings; its
        savings were not measurable: bench/RESULTS.md.)"""
        if not self.text_only or self.token_rows != "none" or self.lora.layers is None:
            return FullText(self.clip.text)
        path = PrefixText(self.clip.model, self.clip.text, self.lora.layers, data.device, data.precision)
        path.remember([c for caps in data.train.captions for c in caps], data.train.lang, data.cache_dir)
        if data.rehearsal is not None:
            path.remember([c for caps in data.rehearsal for c in caps], data.rehearsal_lang, data.cache_dir)
        return path  # captions it has not seen (mirrored ones, --augment flip) are computed when first met

    def _write(self, folder: Path) -> None:
        self.clip.model.save_pretrained(folder)
        save_processor(self.clip, folder, self.lang)  # CLIPProcessor.from_pretrained(folder) tokenizes as turkclip does

    def finish(self, out: Path, records: list[dict]) -> None:
        if self.card is not None:
            write_model_card(out, **self.card, metrics=best_validation(records))
