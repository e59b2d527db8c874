"""What users type — a search query, labels, candidate captions — checked and de-duplicated before a model sees it.

Blank means nothing to search for: a query of spaces, zero-width spaces (U+200B), NUL or other
control/format characters would still be tokenized into a ranking of noise, so it is refused as
empty. A lone surrogate (what Python makes of bytes that are not UTF-8 in a command-line argument)
would make the tokenizer raise a TypeError; it is refused with one line instead.

Duplicates are merged in one pass (a dict), under the key the text tower sees: CLIP's tokenizer
lower-cases everything, after `normalize` (NFC, whitespace, Turkish İ/I folding for `lang="tr"`),
so `Kedi` and `kedi` are one label there; a swapped text tower (`cased=True`) reads case, so only
NFC and whitespace are folded for it.
"""

from __future__ import annotations

import unicodedata

from turkclip.errors import TurkclipError

MAX_QUERY_CHARS = 1000


def check_text(text: str, what: str = "the query") -> str:
    """`text` stripped, or a TurkclipError when it is blank or is not valid Unicode."""
    if any(unicodedata.category(c) == "Cs" for c in text):
        raise TurkclipError(f"{what} is not valid text (it holds bytes that are not UTF-8)")
    if not _has_content(text):
        raise TurkclipError(f"{what} is empty: type a few words" + (" to search for" if what == "the query" else ""))
    return text.strip()


def check_query(text: str) -> str:
    """A search box's query: not blank, at most MAX_QUERY_CHARS."""
    if len(text) > MAX_QUERY_CHARS:
        raise TurkclipError(f"the query is too long (at most {MAX_QUERY_CHARS} characters)")
    return check_text(text)


def same_key(text: str, lang: str, cased: bool = False) -> str:
    """Two texts with one key are one input to the text tower (see the module docstring)."""
    from turkclip.models.text import normalize

    if cased:  # a text tower's own tokenizer: case kept, no Turkish folding (NFC and whitespace only)
        return normalize(text, "en")
    return normalize(text, lang).lower()


def unique(texts: list[str], lang: str, cased: bool = False) -> list[str]:
    """`texts` without the ones the model would see twice, in their first spelling and order (linear time)."""
    first = {}
    for text in texts:
        first.setdefault(same_key(text, lang, cased), text)
    return list(first.values())


def parse_labels(text: str, lang: str = "tr", cased: bool = False) -> list[str]:
    """'kedi, köpek,kuş' or one label per line → ['kedi', 'köpek', 'kuş']; empty pieces are left out,
    duplicates merged."""
    labels = [part.strip() for line in text.splitlines() for part in line.split(",")]
    labels = unique([check_text(label, "a label") for label in labels if _has_content(label)], lang, cased)
    if not labels:
        raise TurkclipError("give at least one label (comma-separated, or one per line)")
    return labels


def parse_captions(text: str, lang: str = "tr", cased: bool = False) -> list[str]:
    """Candidate captions, one per line (a caption is a sentence: commas stay in it); empty lines are left out,
    duplicates merged."""
    captions = unique([check_text(line, "a caption") for line in text.splitlines() if _has_content(line)], lang, cased)
    if not captions:
        raise TurkclipError("give at least one caption (one per line)")
    return captions


def check_captions(captions: list[str], lang: str = "tr", cased: bool = False) -> list[str]:
    """Captions given one by one (`turkclip predict IMAGE CAPTION...`): none may be empty; duplicates merged."""
    if not captions:
        raise TurkclipError("give at least one caption")
    return unique([check_text(c, f"caption {i} ({c!r})") for i, c in enumerate(captions, 1)], lang, cased)


def _has_content(text: str) -> bool:
    """Whether `text` holds a letter, mark, number, punctuation or symbol (not only separators, controls, formats)."""
    return any(unicodedata.category(c)[0] in "LMNPS" for c in text)
