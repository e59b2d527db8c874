"""Caption readers: Karpathy JSON, CSV/TSV/JSONL, Flickr8k tokens; splits and alignment (happy paths)."""

import json

import pytest
import torch

from conftest import FLICKR_TOKENS, need_shared
from turkclip.data.captions import read_captions
from turkclip.data.dataset import ImageTextSet
from turkclip.errors import TurkclipError


def karpathy(path, images):
    """Write a Karpathy-style file: images = [(filename, split, [raw captions])]."""
    doc = {"dataset": "test", "images": [
        {"split": split, "filename": name, "imgid": i,
         "sentences": [{"raw": raw, "tokens": ["wrong", "tokens"], "sentid": 10 * i + j, "imgid": i}
                       for j, raw in enumerate(raws)]}
        for i, (name, split, raws) in enumerate(images)
    ]}
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def tasvir_like(tmp_path):
    return karpathy(tmp_path / "caps.json", [
        ("a.jpg", "train", ["Bir köpek koşuyor.", "Çimenlerde bir köpek."]),
        ("b.jpg", "val", ["İki çocuk oynuyor."]),
        ("c.jpg", "test", ["Kırmızı bir araba.", "Yolda bir araba.", "Park etmiş araba."]),
        ("d.jpg", "train", ["Işık yanıyor."]),
    ])


def test_karpathy_reads_raw_captions_in_order(tasvir_like):
    caps = read_captions(tasvir_like)
    assert [r.filename for r in caps.records] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert caps.records[0].captions == ["Bir köpek koşuyor.", "Çimenlerde bir köpek."]  # `raw`, not `tokens`
    assert caps.n_captions == 7
    assert caps.lang == "tr"


def test_karpathy_splits_are_honoured(tasvir_like):
    caps = read_captions(tasvir_like)
    assert caps.splits() == {"train": 2, "val": 1, "test": 1}
    train = caps.split("train")
    assert [r.filename for r in train.records] == ["a.jpg", "d.jpg"]
    assert [r.filename for r in caps.split("test").records] == ["c.jpg"]
    assert caps.split("all") is caps and caps.split(None) is caps


def test_unknown_split_names_the_available_ones(tasvir_like):
    with pytest.raises(TurkclipError) as e:
        read_captions(tasvir_like).split("validation")
    message = str(e.value)
    assert "'validation'" in message
    for known in ("train (2 images)", "val (1 images)", "test (1 images)"):
        assert known in message
    assert "\n" not in message


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_tsv_group_rows_by_image_with_split(tmp_path, suffix):
    sep = "," if suffix == ".csv" else "\t"
    rows = [("resim", "metin", "bolum"), ("x.jpg", "bir kedi", "train"), ("y.jpg", "bir kuş", "test"),
            ("x.jpg", "uyuyan kedi", "train"), ("z.jpg", "deniz", "train")]
    path = tmp_path / f"caps{suffix}"
    path.write_text("\n".join(sep.join(r) for r in rows) + "\n", encoding="utf-8")
    caps = read_captions(path, image_column="resim", caption_column="metin", split_column="bolum")
    assert [(r.filename, r.split, r.captions) for r in caps.records] == [
        ("x.jpg", "train", ["bir kedi", "uyuyan kedi"]),
        ("y.jpg", "test", ["bir kuş"]),
        ("z.jpg", "train", ["deniz"]),
    ]
    assert [r.filename for r in caps.split("train").records] == ["x.jpg", "z.jpg"]


def test_csv_without_split_column(tmp_path):
    path = tmp_path / "caps.csv"
    path.write_text('image,caption\na.jpg,"bir köpek, koşuyor"\nb.jpg,kedi\na.jpg,köpek\n', encoding="utf-8")
    caps = read_captions(path)
    assert [(r.filename, r.split, r.captions) for r in caps.records] == [
        ("a.jpg", None, ["bir köpek, koşuyor", "köpek"]),
        ("b.jpg", None, ["kedi"]),
    ]
    assert caps.split("all").n_captions == 3


def test_jsonl_with_configurable_columns(tmp_path):
    rows = [{"file": "a.jpg", "text": "bir köpek", "part": "train"},
            {"file": "b.jpg", "text": "bir kedi", "part": "val"},
            {"file": "a.jpg", "text": "koşan köpek", "part": "train"}]
    path = tmp_path / "caps.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    caps = read_captions(path, image_column="file", caption_column="text", split_column="part")
    assert [(r.filename, r.split, r.captions) for r in caps.records] == [
        ("a.jpg", "train", ["bir köpek", "koşan köpek"]),
        ("b.jpg", "val", ["bir kedi"]),
    ]


def test_flickr_tokens_file_groups_and_fixes_malformed_id(tmp_path):
    path = tmp_path / "Flickr8k.token.txt"
    path.write_text(
        "1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n"
        "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
        "2258277193_586949ec62.jpg.1#0\tpeople waiting for the subway\n"
        "2258277193_586949ec62.jpg.1#1\tThree people standing at a station .\n", encoding="utf-8")
    caps = read_captions(path, lang="en")
    assert caps.lang == "en"
    assert [(r.filename, r.split, r.captions) for r in caps.records] == [
        ("1000268201_693b08cb0e.jpg", None, ["A child in a pink dress .", "A girl going into a wooden building ."]),
        ("2258277193_586949ec62.jpg", None, ["people waiting for the subway", "Three people standing at a station ."]),
    ]


def test_real_flickr_tokens_file():
    need_shared(FLICKR_TOKENS)
    caps = read_captions(FLICKR_TOKENS, lang="en")
    by_name = {r.filename: r.captions for r in caps.records}
    assert len(by_name) == 8092 and caps.n_captions == 40460
    assert "2258277193_586949ec62.jpg" in by_name and "2258277193_586949ec62.jpg.1" not in by_name
    assert by_name["2258277193_586949ec62.jpg"][0] == "people waiting for the subway"


def test_aligned_puts_english_on_turkish_images(tmp_path, tasvir_like):
    english = tmp_path / "en.txt"
    english.write_text("c.jpg#0\tA red car .\nzzz.jpg#0\tnot in the set\na.jpg#0\tA dog runs .\na.jpg#1\tA dog .\n",
                       encoding="utf-8")
    turkish = read_captions(tasvir_like)
    aligned = turkish.split("train").aligned(read_captions(english, lang="en"))
    assert aligned.lang == "en"
    assert [(r.filename, r.split, r.captions) for r in aligned.records] == [
        ("a.jpg", "train", ["A dog runs .", "A dog ."]),
        ("d.jpg", "train", []),  # no English caption: stays in the gallery, not a query
    ]


def test_with_captions_shares_pixels_and_keeps_order(tmp_path):
    english = tmp_path / "en.txt"
    english.write_text("b.jpg#0\tB one\nb.jpg#1\tB two\na.jpg#0\tA one\n", encoding="utf-8")
    pixels = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    data = ImageTextSet(["a.jpg", "b.jpg", "c.jpg"], pixels, [["bir"], ["iki"], ["üç"]], "tr", [])
    en = data.with_captions(read_captions(english, lang="en"))
    assert en.pixels is data.pixels and en.filenames == data.filenames
    assert en.lang == "en" and en.captions == [["A one"], ["B one", "B two"], []]
    texts, owner = en.texts()
    assert texts == ["A one", "B one", "B two"] and owner.tolist() == [0, 1, 1]
    assert data.captions == [["bir"], ["iki"], ["üç"]]  # the original is untouched
