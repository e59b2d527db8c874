"""Reading parallel sentences (--parallel-captions): TSV and JSONL, headers, bad lines, encodings, bounds."""

import json

import pytest

from turkclip.data import parallel
from turkclip.data.parallel import read_parallel
from turkclip.errors import TurkclipError

PAIRS = [("a red car", "kırmızı bir araba"), ("two dogs on the left", "solda iki köpek")]


def write(path, text: str, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def tsv(pairs) -> str:
    return "".join(f"{en}\t{tr}\n" for en, tr in pairs)


def test_tsv_without_and_with_a_header(tmp_path):
    assert read_parallel(write(tmp_path / "p.tsv", tsv(PAIRS))).pairs == PAIRS
    assert read_parallel(write(tmp_path / "h.tsv", "en\ttr\n" + tsv(PAIRS))).pairs == PAIRS
    swapped = "tr\ten\n" + "".join(f"{tr}\t{en}\n" for en, tr in PAIRS)  # a header in the other order swaps columns
    assert read_parallel(write(tmp_path / "s.tsv", swapped)).pairs == PAIRS
    custom = read_parallel(write(tmp_path / "c.tsv", "english\tturkish\n" + tsv(PAIRS)), columns=("english", "turkish"))
    assert custom.pairs == PAIRS


def test_windows_line_ends_blank_lines_bom_and_no_final_newline(tmp_path):
    text = "\ufeffen\ttr\r\n\r\n" + "\r\n".join(f"{en}\t{tr}" for en, tr in PAIRS)
    assert read_parallel(write(tmp_path / "w.tsv", text)).pairs == PAIRS


def test_jsonl_with_default_and_configured_keys(tmp_path):
    rows = "".join(json.dumps({"en": en, "tr": tr, "id": i}, ensure_ascii=False) + "\n" for i, (en, tr) in enumerate(PAIRS))
    assert read_parallel(write(tmp_path / "p.jsonl", rows)).pairs == PAIRS
    rows = "".join(json.dumps({"src": en, "tgt": tr}) + "\n" for en, tr in PAIRS)
    assert read_parallel(write(tmp_path / "k.jsonl", rows), columns=("src", "tgt")).pairs == PAIRS


@pytest.mark.parametrize("name, body, line, why", [
    ("p.tsv", "a red car\tkırmızı bir araba\nonly english\n", 2, "expected 2 tab-separated fields"),
    ("p.tsv", "a\tb\tc\n", 1, "found 3"),
    ("p.tsv", "a red car\t  \n", 1, "empty tr sentence"),
    ("p.jsonl", '{"en": "a", "tr": "b"}\n{"en": "a"\n', 2, "not valid JSON"),
    ("p.jsonl", '["a", "b"]\n', 1, "expected a JSON object"),
    ("p.jsonl", '{"en": "a"}\n', 1, "'tr' must be a string, not missing"),
    ("p.jsonl", '{"en": "a", "tr": 3}\n', 1, "'tr' must be a string, not int"),
])
def test_a_bad_line_is_one_error_naming_it(tmp_path, name, body, line, why):
    path = write(tmp_path / name, body)
    with pytest.raises(TurkclipError, match="--skip-bad-lines") as e:
        read_parallel(path)
    assert f"(first: {path}:{line}: " in str(e.value) and why in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_lines_are_counted_and_skipped_when_asked(tmp_path):
    body = tsv(PAIRS[:1]) + "broken\n" + tsv(PAIRS[1:]) + "also\tbroken\tline\n"
    path = write(tmp_path / "p.tsv", body)
    with pytest.raises(TurkclipError, match=r"^2 bad lines in .*p.tsv:2: expected 2"):
        read_parallel(path)
    corpus = read_parallel(path, skip_bad=True)
    assert corpus.pairs == PAIRS and corpus.bad_lines == 2 and corpus.first_bad.startswith(f"{path}:2:")


def test_a_line_over_the_bound_is_bad_and_never_held_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "MAX_LINE_BYTES", 64)
    path = write(tmp_path / "p.tsv", tsv(PAIRS[:1]) + "x" * 1000 + "\ty\n" + tsv(PAIRS[1:]))
    with pytest.raises(TurkclipError, match=r"p.tsv:2: longer than 64 bytes"):
        read_parallel(path)
    assert read_parallel(path, skip_bad=True).pairs == PAIRS
    write(path, tsv(PAIRS) + "z" * 500)  # an over-long last line without a newline
    assert read_parallel(path, skip_bad=True).bad_lines == 1


def test_a_file_over_the_bound_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "MAX_FILE_BYTES", 10)
    with pytest.raises(TurkclipError, match="are refused"):
        read_parallel(write(tmp_path / "p.tsv", tsv(PAIRS)))


def test_encodings(tmp_path):
    assert read_parallel(write(tmp_path / "u16.tsv", "\ufeff" + tsv(PAIRS), "utf-16-le")).pairs == PAIRS
    assert read_parallel(write(tmp_path / "w.tsv", tsv(PAIRS), "cp1254"), encoding="cp1254").pairs == PAIRS
    with pytest.raises(TurkclipError, match=r"not UTF-8 \(byte 0x\w+ on line 2\). It looks like Turkish Windows-1254.*--parallel-encoding cp1254"):
        read_parallel(write(tmp_path / "x.tsv", tsv([("a car", "araba")] + PAIRS), "cp1254"))


@pytest.mark.parametrize("name, body, message", [
    ("missing.tsv", None, "parallel captions file not found"),
    ("p.csv", "a,b\n", "unknown parallel captions format '.csv'"),
    ("empty.tsv", "\n\n", "no sentence pairs found"),
    ("header-only.tsv", "en\ttr\n", "no sentence pairs found"),
])
def test_unusable_files_are_one_line_errors(tmp_path, name, body, message):
    path = tmp_path / name
    if body is not None:
        write(path, body)
    with pytest.raises(TurkclipError, match=message):
        read_parallel(path)
