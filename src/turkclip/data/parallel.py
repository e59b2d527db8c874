"""Parallel sentences (`--parallel-captions FILE`): base-language / new-language pairs, e.g. English–Turkish
translations of captions, that teach the text-tower road without any image.

Two formats, chosen by the file's extension:

* `.tsv` / `.txt`  one pair per line, `base<TAB>new` (e.g. `a red car<TAB>kırmızı bir araba`). An optional
  first line naming the two columns (`en<TAB>tr`, or `tr<TAB>en`, which swaps them) is a header.
* `.jsonl`  one object per line, `{"en": "...", "tr": "..."}`; the keys are configurable (`columns`).

The file is untrusted: it is read line by line (never whole into memory), a line longer than
`MAX_LINE_BYTES` is a bad line, a file larger than `MAX_FILE_BYTES` is refused. A bad line (a missing or
extra field, an empty sentence, invalid JSON, a line too long) stops the run with one message that counts
them and names the first, unless `skip_bad` is set: then they are left out, and counted in the result.
A byte the encoding cannot decode is always an error (the whole file is then read wrongly).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from turkclip.data.captions import not_decodable, text_encoding
from turkclip.errors import TurkclipError

MAX_FILE_BYTES = 4 * 2**30
MAX_LINE_BYTES = 16 * 2**10  # a caption pair is ~100 bytes; a longer line is not one
FORMATS = {".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl"}
FLAG = "--parallel-encoding"  # what a user passes to name the file's encoding


@dataclass(frozen=True)
class ParallelCorpus:
    pairs: list[tuple[str, str]]  # (base-language sentence, new-language sentence), in file order
    bad_lines: int  # left out (only with skip_bad)
    first_bad: str | None  # "FILE:LINE: why", for the report
    source: str


def read_parallel(path: str | Path, columns: tuple[str, str] = ("en", "tr"), encoding: str | None = None,
                  skip_bad: bool = False) -> ParallelCorpus:
    """The sentence pairs of `path`; `columns` names the base and the new language's columns (JSONL keys, or
    the TSV header's names); `encoding` is --parallel-encoding's (None: UTF-8, BOMs detected)."""
    path = Path(path)
    if not path.is_file():
        raise TurkclipError(f"parallel captions file not found: {path}")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise TurkclipError(f"{path}: unknown parallel captions format {path.suffix!r} (use .tsv: base<TAB>new per"
                            " line, or .jsonl: one {\"en\": ..., \"tr\": ...} object per line)")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise TurkclipError(f"{path} is {size / 2**30:.1f} GiB; parallel captions files over"
                            f" {MAX_FILE_BYTES / 2**30:.0f} GiB are refused (split it, or sample it)")
    parse = _tsv_parser(columns) if kind == "tsv" else _jsonl_parser(columns)
    pairs, bad, first_bad = [], 0, None
    for n, line in _lines(path, encoding):
        try:
            if line is None:
                raise _BadLine(f"longer than {MAX_LINE_BYTES} bytes")
            pair = parse(line)
        except _BadLine as e:
            bad += 1
            first_bad = first_bad or f"{path}:{n}: {e}"
            continue
        if pair is not None:
            pairs.append(pair)
    if bad and not skip_bad:
        raise TurkclipError(f"{bad} bad line{'s' if bad > 1 else ''} in {path} (first: {first_bad}); fix"
                            f" {'them' if bad > 1 else 'it'} or pass --skip-bad-lines to leave them out")
    if not pairs:
        raise TurkclipError(f"{path}: no sentence pairs found" + (f" ({bad} bad lines, first: {first_bad})" if bad else ""))
    return ParallelCorpus(pairs, bad, first_bad, str(path))


class _BadLine(Exception):
    """Why one line is not a sentence pair."""


def _tsv_parser(columns: tuple[str, str]):
    """`base<TAB>new` → a pair; a first line naming the columns is a header (the other order swaps them)."""
    state = {"first": True, "swap": False}

    def parse(line: str) -> tuple[str, str] | None:
        if not line.strip():
            return None
        fields = [f.strip() for f in line.split("\t")]
        first, state["first"] = state["first"], False
        if first and len(fields) == 2 and {f.lower() for f in fields} == {c.lower() for c in columns}:
            state["swap"] = fields[0].lower() == columns[1].lower()
            return None
        if len(fields) != 2:
            raise _BadLine(f"expected 2 tab-separated fields ({columns[0]}<TAB>{columns[1]}), found {len(fields)}")
        base, new = reversed(fields) if state["swap"] else fields
        return _pair(base, new, columns)

    return parse


def _jsonl_parser(columns: tuple[str, str]):
    def parse(line: str) -> tuple[str, str] | None:
        if not line.strip():
            return None
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise _BadLine(f"not valid JSON ({e.msg})")
        if not isinstance(row, dict):
            raise _BadLine(f"expected a JSON object with {columns[0]!r} and {columns[1]!r}")
        values = [row.get(c) for c in columns]
        for c, v in zip(columns, values):
            if not isinstance(v, str):
                raise _BadLine(f"{c!r} must be a string, not {'missing' if v is None else type(v).__name__}")
        return _pair(values[0].strip(), values[1].strip(), columns)

    return parse


def _pair(base: str, new: str, columns: tuple[str, str]) -> tuple[str, str]:
    for c, sentence in zip(columns, (base, new)):
        if not sentence:
            raise _BadLine(f"empty {c} sentence")
    return base, new


def _lines(path: Path, encoding: str | None) -> Iterator[tuple[int, str | None]]:
    """(line number, text) of every line, decoded incrementally; None for a line over MAX_LINE_BYTES (the rest of
    it is read and dropped, never held)."""
    with path.open("rb") as f:
        codec = text_encoding(path, f.read(4096), encoding, FLAG)
        f.seek(0)
        decoder = codecs.getincrementaldecoder(codec)()
        pending, n, overlong = "", 0, False
        while chunk := f.readline(MAX_LINE_BYTES + 1):
            try:
                pending += decoder.decode(chunk)
            except UnicodeDecodeError as e:
                raise TurkclipError(not_decodable(path, e, f"on line {n + 1}", encoding, FLAG)) from None
            *done, pending = pending.split("\n")
            for line in done:
                n += 1
                yield n, None if overlong else line
                overlong = False
            if len(pending.encode()) > MAX_LINE_BYTES:
                overlong, pending = True, ""
        if pending or overlong:
            yield n + 1, None if overlong else pending
