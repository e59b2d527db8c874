"""What users type (queries, labels, captions): blank and invalid text refused with one line, duplicates merged in
linear time under the folding the model sees; the default language of an index follows its road."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import TOKENIZER, need_shared
from turkclip.errors import TurkclipError
from turkclip.search.language import index_language
from turkclip.search.texts import check_captions, check_query, parse_captions, parse_labels
from turkclip_train.cli import main


@pytest.mark.parametrize("text", ["", "   ", "\u200b\u200b", "\x00\x00", "\u2003\u3000\n\t", "\u200d\ufeff\u2060"])
def test_blank_queries_are_empty(text):
    with pytest.raises(TurkclipError, match="^the query is empty"):
        check_query(text)


def test_queries_that_are_not_text_or_too_long_are_refused():
    with pytest.raises(TurkclipError, match="not valid text"):
        check_query("kedi \udcff")  # what Python makes of a non-UTF-8 byte in a command-line argument
    with pytest.raises(TurkclipError, match="too long"):
        check_query("a" * 1001)
    assert check_query("  kırmızı bir araba\u200b ") == "kırmızı bir araba\u200b"


def test_labels_merge_what_the_model_reads_as_one():
    assert parse_labels("kedi, köpek\nkuş") == ["kedi", "köpek", "kuş"]
    assert parse_labels("Kedi,kedi, KEDİ ,köpek") == ["Kedi", "köpek"]  # first spelling kept
    assert parse_labels("iki  kedi,iki kedi,\u200b,") == ["iki  kedi"]  # whitespace folded; blank pieces left out
    assert parse_labels("IRMAK,ırmak", lang="tr") == ["IRMAK"]  # Turkish: I is the capital of ı
    assert parse_labels("IRMAK,ırmak", lang="en") == ["IRMAK", "ırmak"]  # English: I is the capital of i
    assert parse_labels("Kedi,kedi", cased=True) == ["Kedi", "kedi"]  # a text tower reads case
    with pytest.raises(TurkclipError, match="give at least one label"):
        parse_labels(" , \n\u200b")


def test_forty_thousand_labels_are_merged_in_one_pass():
    """Quadratic before: 40k labels took 28 s on the page. Behaviour only here (no timing in unit tests)."""
    labels = [f"etiket {i}" for i in range(20_000)] + [f"ETİKET {i}" for i in range(20_000)]
    assert parse_labels(",".join(labels), lang="tr") == labels[:20_000]
    assert len(parse_labels("\n".join(labels), lang="en")) == 40_000  # en: İ lower-cases to i + a dot


def test_captions_are_lines_that_keep_their_commas():
    text = "Karda, oynayan iki çocuk\nkarda,  oynayan iki ÇOCUK\n\n çimlerde koşan bir köpek \n"
    assert parse_captions(text) == ["Karda, oynayan iki çocuk", "çimlerde koşan bir köpek"]
    with pytest.raises(TurkclipError, match="give at least one caption"):
        parse_captions("\n \n\u200b")


def test_captions_given_one_by_one_may_not_be_empty():
    assert check_captions(["bir kedi", "Bir Kedi", "bir köpek"]) == ["bir kedi", "bir köpek"]
    with pytest.raises(TurkclipError, match=r"caption 2 \(' '\) is empty"):
        check_captions(["bir kedi", " "])


def test_search_refuses_a_blank_query_before_loading_anything(tmp_path, capsys, monkeypatch):
    from turkclip.search import photo_index

    monkeypatch.setattr(photo_index, "open_index", lambda *a: pytest.fail("the index was opened"))
    assert main(["search", str(tmp_path), "\u200b\u200b"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "turkclip search: error: the query is empty: type a few words to search for"


def test_predict_refuses_an_empty_caption_before_loading_and_merges_duplicates(tiny_model, tiny_images, capsys,
                                                                                 monkeypatch):
    from turkclip_train import commands

    photo = str(tiny_images / "00.jpg")
    real = commands.load_clip
    monkeypatch.setattr(commands, "load_clip", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["predict", "--model", str(tiny_model), photo, "bir kedi", ""]) == 1
    assert "caption 2 ('') is empty" in capsys.readouterr().err
    monkeypatch.setattr(commands, "load_clip", real)
    assert main(["predict", "--model", str(tiny_model), photo, "bir kedi", "Bir  Kedi", "bir köpek"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split("%")[1].strip() for line in lines) == ["bir kedi", "bir köpek"]


def _index(tmp_path, adapter=None, text_model=None, model="openai/clip-vit-base-patch32", tokenizer=None):
    return SimpleNamespace(adapter=adapter, text_model=text_model, model=model, tokenizer=tokenizer)


def _trained(folder, lang):
    folder.mkdir()
    if lang is not None:
        (folder / "train_config.json").write_text(json.dumps({"lang": lang}))
    return str(folder)


def test_an_index_speaks_the_language_of_its_road(tmp_path):
    assert index_language(_index(tmp_path)) == "en"  # the base CLIP reads English
    assert index_language(_index(tmp_path, adapter=_trained(tmp_path / "a", "tr"))) == "tr"
    assert index_language(_index(tmp_path, adapter=_trained(tmp_path / "b", "en"))) == "en"
    assert index_language(_index(tmp_path, adapter=_trained(tmp_path / "c", "de"))) == "en"  # no Turkish folding
    assert index_language(_index(tmp_path, adapter=_trained(tmp_path / "d", None))) == "tr"  # turkclip's default
    assert index_language(_index(tmp_path, text_model=_trained(tmp_path / "e", None))) == "tr"
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "train_config.json").write_text("[not, an, object")
    assert index_language(_index(tmp_path, adapter=str(tmp_path / "f"))) == "tr"


def test_a_merged_turkish_model_is_turkish(tmp_path):
    """`turkclip merge` writes a tokenizer that folds I → ı: an index of that model speaks Turkish."""
    need_shared(TOKENIZER)
    from tokenizers import Tokenizer

    from turkclip.models.processor import turkish_normalizer

    for name, fold in [("plain", False), ("merged", True)]:
        (tmp_path / name).mkdir()
        tokenizer = Tokenizer.from_file(str(TOKENIZER / "tokenizer.json"))
        if fold:
            tokenizer.normalizer = turkish_normalizer()
        tokenizer.save(str(tmp_path / name / "tokenizer.json"))
    assert index_language(_index(tmp_path, model=str(tmp_path / "plain"))) == "en"
    assert index_language(_index(tmp_path, model=str(tmp_path / "merged"))) == "tr"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{")
    assert index_language(_index(tmp_path, model=str(tmp_path / "broken"))) == "en"
