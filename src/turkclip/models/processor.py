"""The `CLIPProcessor` files turkclip writes beside an adapter or a merged model.

A user who follows the usual Hugging Face recipe

    model = CLIPModel.from_pretrained(base); model.load_adapter(folder)
    processor = CLIPProcessor.from_pretrained(folder)
    model(**processor(text=captions, images=image, return_tensors="pt", padding=True))

must get what `turkclip predict` gets. Two things make that true:

* the image preprocessing config (`preprocessor_config.json`) of the model the adapter was trained on;
* a tokenizer whose normaliser folds case the way `turkclip.models.text.normalize` does. CLIP's own
  normaliser (NFC, whitespace runs → one space, lowercase) turns `I` into `i` and `İ` into `i` + a
  combining dot; for Turkish (`lang="tr"`) the written `tokenizer.json` inserts `I` → `ı` and
  `İ` → `i` between NFC and lowercasing, exactly where `normalize` folds.

transformers 5's `CLIPTokenizer` rebuilds CLIP's standard normaliser whenever it loads, so the
folder's `tokenizer_config.json` names the generic `TokenizersBackend` class: it keeps
`tokenizer.json` as written. turkclip itself folds case in `TextEncoder`, per caption language, so
`load_clip` puts the standard normaliser back (`plain_normalizer`) when it loads such a folder;
English captions of a merged Turkish model are then not folded the Turkish way.

Known, deliberate limits of "exactly": Greek final sigma (Python's `str.lower` writes ς at the end
of a word, the tokenizers library σ) and letters newer than Python's Unicode tables.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers
from transformers import CLIPImageProcessorPil, CLIPProcessor

from turkclip.data.images import Preprocess

# Python's str.split() whitespace, which `normalize` collapses: Unicode White_Space plus U+001C..U+001F.
_WHITESPACE = r"[\s\x1c-\x1f]+"
_TURKISH_FOLD = [normalizers.Replace("I", "ı"), normalizers.Replace("İ", "i")]


def turkish_normalizer() -> normalizers.Normalizer:
    """CLIP's normaliser with Turkish case folding: NFC, whitespace, I→ı and İ→i, lowercase."""
    return normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(_WHITESPACE), " "), *_TURKISH_FOLD, normalizers.Lowercase()]
    )


def plain_normalizer() -> normalizers.Normalizer:
    """CLIP's own normaliser (what transformers' CLIPTokenizer builds)."""
    return normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )


def folds_turkish(tokenizer) -> bool:
    """Whether `tokenizer` (a transformers fast tokenizer, or the `tokenizers.Tokenizer` of a tokenizer.json) carries
    the Turkish fold written by `save_processor`."""
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", tokenizer), "normalizer", None)
    return normalizer is not None and normalizer.normalize_str("I") == "ı"


def image_processor(preprocess: Preprocess) -> CLIPImageProcessorPil:
    """CLIP's image processor with `preprocess`'s size, mean and std (what turkclip's pixels equal bit for bit)."""
    p = preprocess
    return CLIPImageProcessorPil(
        size={"shortest_edge": p.size}, crop_size={"height": p.size, "width": p.size},
        image_mean=list(p.mean), image_std=list(p.std),
    )


def save_processor(clip, folder: str | Path, lang: str | None = "tr") -> None:
    """Write what `CLIPProcessor.from_pretrained(folder)` loads: `clip`'s image preprocessing and
    tokenizer, the tokenizer folding case the Turkish way when `lang` is "tr"."""
    folder = Path(folder)
    if (folder / "modules.json").exists():  # a sentence-transformers folder (a text tower) carries its own tokenizer
        return
    CLIPProcessor(image_processor=image_processor(clip.preprocess), tokenizer=clip.text.tokenizer).save_pretrained(folder)
    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    # A tokenizer that has been called with truncation/padding saves them as defaults, and transformers then
    # warns on every processor(..., padding=True) call: write it as it was loaded.
    backend.no_truncation()
    backend.no_padding()
    if lang == "tr":  # CLIP's own normaliser is right for English (and what TextEncoder uses for it)
        backend.normalizer = turkish_normalizer()
    backend.save(str(folder / "tokenizer.json"))
    if lang != "tr":
        return
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "TokenizersBackend"  # keeps tokenizer.json's normaliser (CLIPTokenizer rebuilds it)
    config["model_max_length"] = clip.text.max_length  # so truncation=True cuts at the text tower's positions
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
