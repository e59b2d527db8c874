"""The caption of a mirrored image: left and right swapped, everything else kept.

A horizontal flip turns "solda bir köpek" (a dog on the left) into a lie unless the caption
changes with the pixels. `flip_caption` swaps the words that name a side:

* Turkish `sol` / `sağ` with their suffixes. Both stems have a back vowel, so the suffixes'
  a/e harmony is the same for both and only the four-way (ı/i/u/ü) vowels change: `solunda` ↔
  `sağında`, `soluna` ↔ `sağına`, `sollu` ↔ `sağlı`; `solda` ↔ `sağda`, `soldaki` ↔ `sağdaki`,
  `sağdan sola` ↔ `soldan sağa`, `sağ tarafta` ↔ `sol tarafta`. A word is swapped only when
  what follows the stem is a suffix chain a position word takes (possessive, n-buffer, case,
  `-ki` and what follows it, `-lı`); words that merely begin like one (`solmuş`, `sağlam`,
  `sağlık`, `solist`, `solgun`, `sağır`, `sağdıç`, `soluyor`, `solucan`) stay as they are.
  `sağ` meaning "alive" (`sağ salim`, `sağ kalan`, `sağ ol`) stays too.
* English `left` / `right` where they name a side: after a determiner (`the left`, `his right
  hand`, `man's left`), with a side word (`upper left`, `left side`, `left arm`), hyphenated
  (`left-hand`, `top-right`), `from left to right`, after a verb of moving or looking (`turns
  left`), after `to`/`on`/`at`. `left` as a verb (`has left`, `the man left the room`, `left
  behind`) and `right` as "directly" (`right behind`, `right now`, `all right`) stay as they are.

Case is kept (`SOLDA` → `SAĞDA`, `Sağda` → `Solda`, `Left` → `Right`).

When a caption holds a side word this module cannot read with confidence (an unknown word
starting with sol/sağ, an ASCII-only `sagda`, an English `left`/`right` no rule covers),
`flipped_or_none` returns None and the training item is simply not flipped: a caption must
never become false. Limits: text visible in the picture (signs, shirts) reads mirrored after a
flip and nothing in a caption says so; idioms such as "the right to vote" read as a side;
only Turkish and English are known.
"""

from __future__ import annotations

import re

from turkclip.errors import TurkclipError

LANGS = ("tr", "en")


class UnsafeFlip(TurkclipError):
    """The caption names a side in a way this module cannot swap with confidence."""


def flip_caption(text: str, lang: str) -> str:
    """`text` as the caption of the horizontally mirrored image (left and right swapped).

    Raises `UnsafeFlip` when a left/right word cannot be swapped safely (see `flipped_or_none`)."""
    flipped = flipped_or_none(text, lang)
    if flipped is None:
        raise UnsafeFlip(f"cannot flip {text!r} safely: a left/right word in it is ambiguous")
    return flipped


def flipped_or_none(text: str, lang: str) -> str | None:
    """The flipped caption, the same caption when it names no side, or None when it is not safe to flip."""
    if lang not in LANGS:
        raise TurkclipError(f"flipping captions knows Turkish and English only, not {lang!r};"
                            " use --augment without flip")
    swap = _swap_tr if lang == "tr" else _swap_en
    words = list(_WORD.finditer(text))
    out, last = [], 0
    for k, m in enumerate(words):
        new = swap(words, k, text)
        if new is _UNSAFE:
            return None
        if new is not None:
            out += [text[last : m.start()], _recase(m.group(), new, lang)]
            last = m.end()
    return "".join(out) + text[last:]


_WORD = re.compile(r"[^\W\d_]+")  # runs of letters (any script)
_UNSAFE = object()


def _lower(word: str, lang: str) -> str:
    return word.translate(_TR_LOWER).lower() if lang == "tr" else word.lower()


def _upper(word: str, lang: str) -> str:
    return word.translate(_TR_UPPER).upper() if lang == "tr" else word.upper()


_TR_LOWER = str.maketrans({"I": "ı", "İ": "i"})
_TR_UPPER = str.maketrans({"i": "İ", "ı": "I"})


def _recase(old: str, new: str, lang: str) -> str:
    """`new` (lower case) in the case pattern of `old`: UPPER, Title or lower."""
    if len(old) > 1 and old.isupper():
        return _upper(new, lang)
    if old[:1].isupper():
        return _upper(new[:1], lang) + new[1:]
    return new


def _neighbour(words: list, k: int, text: str, step: int) -> tuple[str, str]:
    """(the word before/after word k, in lower case; the characters between them). Punctuation other than
    a hyphen or an apostrophe ends a clause: there is no neighbour across it."""
    j = k + step
    if not 0 <= j < len(words):
        return "", ""
    a, b = (words[j], words[k]) if step < 0 else (words[k], words[j])
    between = text[a.end() : b.start()]
    if between.strip() not in ("", "-", "'", "’"):
        return "", between
    return words[j].group().lower(), between


# ---------------------------------------------------------------- Turkish

# What may follow `sol`/`sağ` in a word that names a side, spelt with "H" for the stem's four-way harmony
# vowel (u after sol, ı after sağ). Everything after -ki follows ki's own front vowel and never changes.
def _side_suffixes() -> frozenset[str]:
    cases = ["", "a", "da", "dan", "H", "Hn"]  # bare, dative, locative, ablative, accusative, genitive
    chains = set(cases) | {"lH"}  # sollu / sağlı
    chains |= {"H" + c for c in ["", "na", "nda", "ndan", "nH", "nHn", "yla"]}  # its left: solu, soluna, solunda…
    chains |= {p + c for p in ["Hm", "Hn", "HmHz", "HnHz"] for c in cases}  # my/your/our left: solumda, sağınızda…
    after_ki = ["", "ler", "leri", "lerin", "lere", "lerde", "lerden", "ni", "ne", "nde", "nden", "nin", "yle"]
    chains |= {c + "ki" + a for c in list(chains) if c.endswith(("da", "Hn")) for a in after_ki}  # soldaki, sağınki
    return frozenset(chains)


_TR_SUFFIXES = _side_suffixes()
_HARMONY = {"sol": "u", "sağ": "ı"}
_OTHER = {"sol": "sağ", "sağ": "sol"}
_ALIVE = {"salim", "ol", "olsun", "olun", "olsunlar", "kalan", "kalanlar", "kaldı", "kalmış", "kalmak", "kurtuldu",
          "kurtulan", "çıktı"}  # "sağ" meaning alive, not right
# Words that begin like sol/sağ and are something else. An unknown sol…/sağ… word is not flipped
# (the whole caption is left unflipped), so this list only needs the common look-alikes.
_LOOKALIKE = re.compile(
    r"^(?:sağl[aeı]|sağır|sağan|sağdıç|sağıl|sağma|sağcı|sağar|sağıyor"  # sağlam, sağlık, sağır, sağdıç, sağmak…
    r"|solm|solg|solis|solo|solu[ğkşs]|solucan|solun[au]m|soluy|solak|solcu|solf|solü|solar|solan)")  # solmuş…


def _swap_tr(words: list, k: int, text: str):
    word = _lower(words[k].group(), "tr")
    if word.startswith("sag") and re.fullmatch(r"sag(?:a|da|dan|daki|i|in|ina|inda|indan|indaki)?", word):
        return _UNSAFE  # Turkish typed without its letters: "sagda" names a side this module would not swap
    stem = word[:3]
    if stem not in _HARMONY:
        return None
    rest = word[3:]
    if rest == "" and stem == "sağ" and _neighbour(words, k, text, +1)[0] in _ALIVE:
        return None
    before_ki, ki, after_ki = rest.partition("ki")
    if before_ki.replace(_HARMONY[stem], "H") + ki + after_ki in _TR_SUFFIXES:
        other = _OTHER[stem]
        return other + before_ki.replace(_HARMONY[stem], _HARMONY[other]) + ki + after_ki
    if _LOOKALIKE.match(word):
        return None
    return _UNSAFE


# ---------------------------------------------------------------- English

_EN_OTHER = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost",
             "lefthand": "righthand", "righthand": "lefthand"}
_DETERMINERS = {"the", "a", "an", "his", "her", "their", "its", "my", "your", "our", "whose", "far", "extreme"}
_SIDE_ADJ = {"upper", "lower", "top", "bottom", "front", "back", "rear", "center", "centre", "middle"}
_SIDE_NOUNS = {
    "side", "sides", "hand", "hands", "arm", "arms", "leg", "legs", "foot", "feet", "eye", "eyes", "ear", "ears",
    "shoulder", "shoulders", "corner", "edge", "wrist", "wrists", "knee", "elbow", "cheek", "hip", "thumb", "palm",
    "shoe", "glove", "boot", "lane", "wing", "field", "fielder", "turn", "paw", "handed", "half", "bank", "front",
    "rear", "back", "hind", "flank", "border", "margin", "part", "panel", "wall", "door", "seat", "ankle", "fist",
}
_MOVING = {
    "turn", "turns", "turning", "turned", "look", "looks", "looking", "looked", "glance", "glances", "glancing",
    "face", "faces", "facing", "faced", "point", "points", "pointing", "pointed", "lean", "leans", "leaning", "leaned",
    "head", "heads", "heading", "headed", "move", "moves", "moving", "moved", "veer", "veers", "veering", "swerve",
    "swerves", "swerving", "go", "goes", "going", "went", "run", "runs", "running", "jump", "jumps", "jumping",
    "steer", "steers", "steering", "tilt", "tilts", "tilting", "tilted", "swing", "swings", "swinging", "bank",
    "banks", "banking", "dive", "dives", "diving", "kick", "kicks", "kicking", "swim", "swims", "swimming", "ride",
    "rides", "riding", "walk", "walks", "walking", "gaze", "gazes", "gazing", "stare", "stares", "staring", "slide",
    "slides", "sliding", "throw", "throws", "throwing", "lunge", "lunges", "lunging", "reach", "reaches", "reaching",
}
_TOWARDS = {"to", "on", "at", "from", "toward", "towards", "into", "onto", "in"}
_RIGHT_AS_DIRECTLY_NEXT = {  # "right behind the dog": right means "directly", not a side
    "at", "in", "into", "behind", "outside", "inside", "toward", "towards", "where", "through", "next", "beside", "by",
    "up", "down", "above", "below", "under", "over", "on", "off", "along", "across", "around", "near", "before",
    "after", "now", "away", "here", "there", "back", "then", "when", "onto", "against", "beneath", "underneath",
    "past", "out", "as", "between", "alongside",
}
_RIGHT_AS_CORRECT_BEFORE = {"all", "is", "are", "was", "were", "be", "not", "just", "exactly", "quite", "alright"}
_LEFT_AS_VERB_BEFORE = {
    "has", "have", "had", "was", "were", "is", "are", "be", "been", "being", "just", "nothing", "something",
    "anything", "everything", "who", "that", "which", "he", "she", "they", "i", "we", "you", "it", "still", "was",
    "recently", "already", "never",
}
_LEFT_AS_VERB_NEXT = {
    "behind", "over", "alone", "by", "out", "off", "home", "the", "a", "an", "his", "her", "their", "its", "him",
    "them", "it", "this", "that", "these", "those", "for", "after", "with", "early", "unattended", "open",
}


def _swap_en(words: list, k: int, text: str):
    word = words[k].group().lower()
    if word not in _EN_OTHER:
        return None
    other = _EN_OTHER[word]
    if word not in ("left", "right"):
        return other
    prev, sep_prev = _neighbour(words, k, text, -1)
    nxt, sep_next = _neighbour(words, k, text, +1)
    before2 = _neighbour(words, k - 1, text, -1)[0] if k > 0 else ""
    if sep_prev.strip() == "-" or sep_next.strip() == "-":  # left-hand, top-right, right-handed
        return other
    if prev in _DETERMINERS or prev in _SIDE_ADJ or (prev == "s" and sep_prev.strip() in ("'", "’")):
        return other  # the left, his right hand, upper left, the man's left
    if nxt in _SIDE_NOUNS:
        return other  # left side, right arm
    if nxt in ("to", "and", "or") and _neighbour(words, k + 1, text, +1)[0] in ("left", "right"):
        return other  # from left to right, left and right (the pair swaps word by word)
    if prev in ("to", "and", "or") and before2 in ("left", "right"):
        return other
    if word == "right":
        if nxt in _RIGHT_AS_DIRECTLY_NEXT:
            return _UNSAFE if prev in _MOVING else None  # "turns right at" (side) or "looking right at" (directly)?
        if prev in _RIGHT_AS_CORRECT_BEFORE:
            return None  # all right, is right
    else:
        if prev in _LEFT_AS_VERB_BEFORE or (nxt in _LEFT_AS_VERB_NEXT and prev not in _MOVING | _TOWARDS):
            return None  # has left, the man left the room, left behind
    if prev in _MOVING or prev in _TOWARDS:
        return other  # turns left, looks right, to left, on right
    return _UNSAFE
