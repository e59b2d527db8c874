"""Caption text → token ids.

Two things happen here that CLIP's own tokenizer gets wrong or leaves to the caller:

* Turkish case folding. CLIP's tokenizer lower-cases with Python's `str.lower`, which
  maps `I` → `i` and `İ` → `i̇` (i + combining dot). Turkish wants `I` → `ı` and
  `İ` → `i`, so for Turkish captions we fold case ourselves before tokenizing.
* Dynamic padding and truncation. Batches are padded to their longest caption, not to
  77, and captions longer than the text tower's positions are truncated, never fatal.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: checking what a user typed (turkclip.search.texts) needs no torch
    import torch

_TURKISH_UPPER = str.maketrans({"I": "ı", "İ": "i"})


def normalize(text: str, lang: str = "tr") -> str:
    """Unicode-normalise (NFC), collapse whitespace and, for Turkish, fold case the Turkish way."""
    text = " ".join(unicodedata.normalize("NFC", text).split())
    if lang == "tr":
        text = text.translate(_TURKISH_UPPER).lower()
    return text


class TextEncoder:
    """Tokenizes captions for one model: language-aware normalisation, dynamic padding.

    `max_length` is the text tower's number of positions (77 for OpenAI CLIP).
    """

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str], langs: list[str] | str = "tr") -> dict[str, torch.Tensor]:
        if isinstance(langs, str):
            langs = [langs] * len(texts)
        texts = [normalize(t, lang) for t, lang in zip(texts, langs)]
        batch = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def token_ids(self, texts: list[str], lang: str) -> set[int]:
        """Every token id that occurs in `texts` (used to pick embedding rows to train)."""
        texts = [normalize(t, lang) for t in texts]
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return {i for row in ids for i in row}
