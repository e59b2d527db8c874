"""Which language an index's queries are in when the user does not say: the language of its road.

It decides the case folding of queries (`tr` folds İ/I the Turkish way, `en` leaves English as CLIP
reads it) and the language of the search page. An index built with an adapter or a text tower speaks
what that road was trained on (`train_config.json` in its folder, written by `turkclip train`;
Turkish when the file is missing); a model folder that `turkclip merge` wrote for Turkish carries the
Turkish fold in its tokenizer; anything else is the base CLIP, which reads English.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from turkclip.search.photo_index import PhotoIndex


def trained_language(folder: str | Path) -> str | None:
    """The --lang a `turkclip train` output folder was trained with, or None when it does not say."""
    try:
        lang = json.loads((Path(folder) / "train_config.json").read_text(encoding="utf-8")).get("lang")
    except (OSError, ValueError, AttributeError):  # no file, not JSON, not an object
        return None
    return lang if isinstance(lang, str) else None


def index_language(index: PhotoIndex) -> str:
    """The index's language as the page and the API speak it: tr, or en for any other (no Turkish folding)."""
    road = index.adapter or index.text_model
    if road:
        return "tr" if (trained_language(road) or "tr") == "tr" else "en"
    return "tr" if _folds_turkish(Path(index.tokenizer or index.model) / "tokenizer.json") else "en"


def _folds_turkish(tokenizer_file: Path) -> bool:
    from tokenizers import Tokenizer

    from turkclip.models.processor import folds_turkish

    try:
        return tokenizer_file.is_file() and folds_turkish(Tokenizer.from_file(str(tokenizer_file)))
    except Exception:  # noqa: BLE001 (tokenizers raises a bare Exception for a file it cannot parse: not turkclip's)
        return False
