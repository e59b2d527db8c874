"""The roads to a new language: what trains, how captions become vectors, what is saved.

- `lora.LoraRoad`: LoRA adapters (PEFT) on CLIP's own towers, plus the token rows the base never learnt;
  the output is an adapter folder.
- `tower.TowerRoad`: CLIP's text tower swapped for a pretrained multilingual encoder + pooling + projection,
  aligned to the frozen image tower; the output is a sentence-transformers folder.
- `full.FullRoad`: every weight of CLIP trains (the offline demo's stand-in for pretraining).

`road.Road` is the interface the training loop talks to; `load_clip` loads a base with a trained road on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from turkclip.errors import TurkclipError
from turkclip.models.hub import DEFAULT_MODEL

if TYPE_CHECKING:  # the package stays light: `turkclip --help` imports its settings without torch
    from turkclip.models.clip import Clip


def load_clip(name: str = DEFAULT_MODEL, tokenizer: str | None = None, text_model: str | None = None,
              adapter: str | None = None) -> Clip:
    """The base CLIP `name` (hub id or folder), with at most one trained road on it: `adapter`, a LoRA adapter
    folder, or `text_model`, a text tower folder aligned to this base (captions then go through it instead of
    CLIP's own text tower). Both written by `turkclip train`."""
    if adapter and text_model:
        raise TurkclipError("give --adapter or --text-model, not both (two roads to the same goal)")
    from turkclip.models.clip import load_base

    clip = load_base(name, tokenizer)
    if text_model:
        from turkclip.roads.text_tower import load_text_tower, swap_text_tower

        tower, alignment = load_text_tower(text_model)
        clip = swap_text_tower(clip, tower, alignment, source=text_model)
    if adapter:
        from turkclip.roads.adapters import load_adapter

        clip.model = load_adapter(clip.model, adapter)
    return clip
