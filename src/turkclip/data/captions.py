"""Caption files → `CaptionSet`: which images exist, in which split, with which captions.

Three formats, chosen by file extension:

* `.json`  Karpathy style (TasvirEt, COCO-Karpathy): `{"images": [{"split", "filename",
           "sentences": [{"raw": ...}]}]}`. The `split` field is honoured.
* `.csv` / `.tsv` / `.jsonl`  one row per (image, caption); column names are configurable,
           a split column is optional. Rows of the same image are grouped.
* `.txt`   Flickr8k's `Flickr8k.token.txt`: `name.jpg#k<TAB>caption` (English).

Every problem is a `TurkclipError` that names the file and the place in it. The file is untrusted: it is
bounded (`MAX_BYTES`), JSON nested too deeply to read is refused, and a caption or file name that is not
Unicode text (a lone surrogate, which JSON's "\ud800" escapes can make) is refused with its place rather than
repaired: replacing it would train on a caption the file does not hold.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from turkclip.errors import TurkclipError

MAX_BYTES = 2 * 2**30  # a captions file larger than this is refused (WebDataset shards scale further)

@dataclass
class ImageRecord:
    filename: str  # relative to the images root
    split: str | None
    captions: list[str] = field(default_factory=list)


@dataclass
class CaptionSet:
    records: list[ImageRecord]
    lang: str  # "tr", "en", ...: decides text normalisation
    source: str  # file it came from, for messages

    @property
    def n_captions(self) -> int:
        return sum(len(r.captions) for r in self.records)

    def splits(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[str(r.split)] = counts.get(str(r.split), 0) + 1
        return counts

    def split(self, name: str | None) -> "CaptionSet":
        """The records of one split, or of several named with commas ("train,restval"); `None` or "all": every
        record."""
        if name in (None, "all"):
            return self
        names = set(name.split(","))
        records = [r for r in self.records if r.split in names]
        if not records:
            splits = {k: v for k, v in self.splits().items() if k != "None"}
            if not splits:
                raise TurkclipError(f"{self.source} has no splits; use --split all (train: --train-split all)"
                                    " to take every image")
            raise TurkclipError(f"{self.source}: no split named {name!r}; it has: {self.describe_splits()}"
                                " (or --split all for every image)")
        return CaptionSet(records, self.lang, self.source)

    def left_out(self, *names: str | None) -> dict[str, int]:
        """Images per split that none of `names` (split names, comma lists, "all") takes: {split: images}, with
        images that have no split under "None"."""
        if "all" in names:
            return {}
        used = {n for name in names if name for n in name.split(",")}
        return {k: v for k, v in self.splits().items() if k not in used}

    def describe_splits(self, counts: dict[str, int] | None = None) -> str:
        """"train (6000 images), val (1000 images), (no split) (3 images)": for messages."""
        counts = self.splits() if counts is None else counts
        return ", ".join(f"{'(no split)' if k == 'None' else k} ({v} images)" for k, v in counts.items())

    def aligned(self, other: "CaptionSet") -> "CaptionSet":
        """`other`'s captions on this set's images, in this set's order and splits.

        Used to evaluate the same gallery in another language (e.g. Flickr8k English
        captions on TasvirEt's test split). Images `other` lacks get no captions: they
        stay in the gallery but are not queries.
        """
        by_name = {r.filename: r.captions for r in other.records}
        if not any(r.filename in by_name for r in self.records):
            raise TurkclipError(f"{other.source} has captions for none of the images in {self.source}")
        records = [ImageRecord(r.filename, r.split, list(by_name.get(r.filename, []))) for r in self.records]
        return CaptionSet(records, other.lang, other.source)


def read_captions(
    path: str | Path,
    lang: str = "tr",
    encoding: str | None = None,
    image_column: str = "image",
    caption_column: str = "caption",
    split_column: str = "split",
) -> CaptionSet:
    path = Path(path)
    if not path.is_file():
        raise TurkclipError(f"captions file not found: {path}")
    text = read_text(path, encoding)
    suffix = path.suffix.lower()
    if suffix == ".json":
        records = _read_karpathy(text, path)
    elif suffix in (".csv", ".tsv"):
        rows = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        try:
            records = _group_rows(rows, path, image_column, caption_column, split_column, header=rows.fieldnames)
        except csv.Error as e:
            raise TurkclipError(f"{path}:{rows.line_num}: not valid {suffix[1:].upper()}: {e}") from None
    elif suffix == ".jsonl":
        records = _group_rows(_jsonl_rows(text, path), path, image_column, caption_column, split_column)
    elif suffix == ".txt":
        records = _read_flickr_tokens(text, path)
    else:
        raise TurkclipError(f"{path}: unknown captions format {suffix!r} (use .json, .csv, .tsv, .jsonl or .txt)")
    if not records:
        raise TurkclipError(f"{path}: no images with captions found")
    return CaptionSet(records, lang, str(path))


def read_text(path: Path, encoding: str | None = None) -> str:
    """Read a text file as UTF-8 (or `encoding`), detecting BOMs; refuse to guess silently."""
    if path.stat().st_size > MAX_BYTES:
        raise TurkclipError(f"{path} is larger than {MAX_BYTES // 2**30} GB, the most turkclip reads as one captions"
                            " file: split it, or write the data as WebDataset shards (--shards)")
    data = path.read_bytes()
    codec = text_encoding(path, data[:4096], encoding)
    try:
        return data.decode(codec)
    except UnicodeDecodeError as e:
        raise TurkclipError(not_decodable(path, e, f"at offset {e.start}", encoding)) from None


def text_encoding(path: Path, head: bytes, encoding: str | None, flag: str = "--encoding") -> str:
    """The codec to read `path` with, given its first bytes `head`: `encoding` if given (UTF-8 reads past a BOM),
    UTF-16 when a BOM says so, else UTF-8 (a BOM allowed). UTF-16 without a BOM is refused with the `flag` to pass."""
    if encoding:
        try:
            name = codecs.lookup(encoding).name
        except LookupError as e:
            raise TurkclipError(f"{path}: cannot be read as {encoding}: {e}") from None
        return "utf-8-sig" if name == "utf-8" else encoding  # a BOM is not part of the first column's name
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # the BOM makes UTF-16 unambiguous: just read it
    if head.count(0) > len(head) // 4:  # text has no NULs; UTF-16 without a BOM has one in every ASCII character
        order = "le" if head[1::2].count(0) > head[0::2].count(0) else "be"
        raise TurkclipError(f"{path} looks like UTF-16 without a byte-order mark: pass {flag} utf-16-{order}"
                            " (or re-save it as UTF-8)")
    return "utf-8-sig"


def not_decodable(path: Path, error: UnicodeDecodeError, position: str, encoding: str | None,
                  flag: str = "--encoding") -> str:
    """The one-line message for bytes of `path` that cannot be decoded (`position`: where, e.g. "at offset 12"),
    with a hint when they look like Turkish Windows-1254 and the `flag` that names the encoding."""
    bad = f"byte {error.object[error.start]:#04x} {position}"
    if encoding:
        return f"{path}: cannot be read as {encoding} ({bad})"
    hint = ""
    try:
        if any(ch in bytes(error.object).decode("cp1254") for ch in "ğşıİĞŞ"):
            hint = " It looks like Turkish Windows-1254 (latin-5);"
    except UnicodeDecodeError:
        pass
    return f"{path} is not UTF-8 ({bad}).{hint} pass {flag} cp1254 (or the file's real encoding), or re-save it as UTF-8"


def _read_karpathy(text: str, path: Path) -> list[ImageRecord]:
    doc = _json(text, str(path), whole_file=True)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise TurkclipError(f'{path}: not a Karpathy-style captions file: missing top-level "images" list')
    records, seen = [], {}
    for i, item in enumerate(doc["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(item, dict):
            raise TurkclipError(f"{where} is not an object")
        for key in ("filename", "sentences"):
            if key not in item:
                raise TurkclipError(f'{where} has no "{key}" key')
        name = item["filename"]
        if not isinstance(name, str) or not name:
            raise TurkclipError(f'{where}: "filename" must be a non-empty string')
        _check_unicode(name, f"{where}.filename")
        if name in seen:
            raise TurkclipError(f"{where}: duplicate entry for image {name!r} (first at images[{seen[name]}])")
        seen[name] = i
        if not isinstance(item["sentences"], list):
            raise TurkclipError(f'{where}: "sentences" must be a list')
        captions = []
        for j, sentence in enumerate(item["sentences"]):
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(raw, str):
                raise TurkclipError(f'{where}.sentences[{j}] has no "raw" caption string')
            captions.append(clean_caption(raw, f"{where}.sentences[{j}]"))
        split = item.get("split")
        records.append(ImageRecord(name, str(split) if split is not None else None, captions))
    return records


def _jsonl_rows(text: str, path: Path):
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            row = _json(line, f"{path}:{n}")
            if not isinstance(row, dict):
                raise TurkclipError(f"{path}:{n}: each line must be a JSON object")
            yield row


def _group_rows(rows, path: Path, image_col: str, caption_col: str, split_col: str, header=None):
    if header is not None:  # CSV: check the columns once, up front
        missing = [c for c in (image_col, caption_col) if c not in (header or [])]
        if missing:
            raise TurkclipError(
                f"{path}: missing column(s) {', '.join(missing)}; it has {', '.join(header or [])}"
                " (choose columns with --image-column / --caption-column)"
            )
    by_name: dict[str, ImageRecord] = {}
    for n, row in enumerate(rows, 2 if header is not None else 1):
        where = f"{path}:{n}"
        name, caption = row.get(image_col), row.get(caption_col)
        if name is None or caption is None:
            raise TurkclipError(f"{where}: needs {image_col!r} and {caption_col!r} fields")
        if not isinstance(name, str) or not name:
            raise TurkclipError(f"{where}: {image_col!r} must be a non-empty file name, not {name!r}")
        _check_unicode(name, where)
        split = row.get(split_col) or None
        record = by_name.setdefault(name, ImageRecord(name, split))
        if record.split != split:
            raise TurkclipError(f"{where}: image {name!r} is in split {split!r} here but {record.split!r} earlier")
        record.captions.append(clean_caption(str(caption), where))
    return list(by_name.values())


_FLICKR_LINE = re.compile(r"^(?P<name>[^#\t]+?)(?:\.\d+)?#\d+\t(?P<caption>.*)$")


def _read_flickr_tokens(text: str, path: Path) -> list[ImageRecord]:
    by_name: dict[str, ImageRecord] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _FLICKR_LINE.match(line)
        if not match:
            raise TurkclipError(f"{path}:{n}: expected 'name.jpg#k<TAB>caption'")
        # Flickr8k has one malformed id, '2258277193_586949ec62.jpg.1#0': the regex drops the '.1'.
        name = match["name"]
        by_name.setdefault(name, ImageRecord(name, None)).captions.append(clean_caption(match["caption"], f"{path}:{n}"))
    return list(by_name.values())


def _json(text: str, where: str, whole_file: bool = False):
    """Parse one JSON document; one line naming `where` (and in a whole file, the line and column) when it is
    malformed or nested too deeply to read."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        place = f"line {e.lineno}, column {e.colno}: " if whole_file else ""
        raise TurkclipError(f"{where}: not valid JSON ({place}{e.msg})") from None
    except RecursionError:
        raise TurkclipError(f"{where}: JSON nested too deeply to read (a captions file needs a few levels)") from None


def _check_unicode(text: str, where: str) -> None:
    """Refuse text holding a lone surrogate (a JSON escape such as \\ud800 with no partner): it is not a character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TurkclipError(f"{where}: holds {text[e.start]!r}, half of a UTF-16 pair and not a character (a"
                            " broken \\uXXXX escape?): fix it in the file") from None


def clean_caption(text: str, where: str) -> str:
    """The caption without surrounding whitespace; an empty one is an error at `where` (file and place in it)."""
    text = text.strip()
    if not text:
        raise TurkclipError(f"{where}: empty caption")
    _check_unicode(text, where)
    return text
