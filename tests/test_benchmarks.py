"""`turkclip evaluate --benchmark`: Crossmodal-3600, XTD10, XTD200 and Flickr30k-200 in their published layouts,
scored as CLIP_benchmark scores them and with every caption."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from turkclip.data.benchmarks import read_benchmark
from turkclip.errors import TurkclipError
from turkclip.evaluation.metrics import clip_benchmark_names, retrieval_metrics
from turkclip_train.cli import main

CAPTIONS = ["kırmızı bir top", "İki köpek koşuyor", "ağaçların altında bir kız", "şehirde ışıklı bir cadde",
            "göl kenarında oturan adam", "çimlerde uyuyan kedi"]


def jpegs(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(folder / name)


def xm3600(root, n=6, lines=None):
    """captions.jsonl as Google publishes it: per language, a list of captions (the first is CLIP_benchmark's)."""
    jpegs(root / "images", [f"{k:016x}.jpg" for k in range(n)])
    lines = lines or [json.dumps({"image/key": f"{k:016x}", "image/locale": "tr",
                                  "en": {"caption": [f"a picture {k}"], "caption/tokenized": [f"a picture {k}"]},
                                  "tr": {"caption": [CAPTIONS[k], f"başka bir açıklama {k}"]}}, ensure_ascii=False)
                      for k in range(n)]
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def aligned(root, index, captions_file, names, captions, newline="\n"):
    """XTD-style files: an image list and a captions file, line i of one for line i of the other."""
    jpegs(root / "images", names)
    (root / index).write_text("\n".join(names) + "\n", encoding="utf-8")
    (root / captions_file).write_bytes((newline.join(captions) + newline).encode("utf-8"))
    return root


NAMES = [f"COCO_val2014_{i:012d}.jpg" for i in range(6)]


def xtd10(root, **kw):
    return aligned(root, "test_image_names.txt", "test_1kcaptions_tr.txt", NAMES, CAPTIONS, newline="\r\n", **kw)


# --- reading the layouts --------------------------------------------------------------------------------


def test_xm3600_first_caption_is_the_protocol_and_all_captions_are_kept(tmp_path):
    bench = read_benchmark("xm3600", xm3600(tmp_path), "tr")
    assert [r.filename for r in bench.protocol.records] == [f"{k:016x}.jpg" for k in range(6)]
    assert [r.captions for r in bench.protocol.records] == [[c] for c in CAPTIONS]
    assert [len(r.captions) for r in bench.every.records] == [2] * 6
    assert bench.every.records[0].captions[1] == "başka bir açıklama 0"
    assert bench.protocol.lang == "tr" and bench.images == tmp_path / "images"
    english = read_benchmark("xm3600", tmp_path, "en")
    assert english.every is english.protocol and english.protocol.records[3].captions == ["a picture 3"]


def test_xtd10_crlf_captions_are_read_line_by_line(tmp_path):
    bench = read_benchmark("xtd10", xtd10(tmp_path), "tr")
    assert [r.filename for r in bench.protocol.records] == NAMES
    assert [r.captions for r in bench.protocol.records] == [[c] for c in CAPTIONS]  # no stray "\r"
    assert bench.every is bench.protocol  # one caption per image: the two protocols are one set


def test_xtd10_japanese_is_jp(tmp_path):
    aligned(tmp_path, "test_image_names.txt", "test_1kcaptions_jp.txt", NAMES, CAPTIONS)
    assert read_benchmark("xtd10", tmp_path, "ja").code == "jp"


@pytest.mark.parametrize("name, index", [("xtd200", "test_image_names.txt"), ("flickr30k-200", "filenames.txt")])
@pytest.mark.parametrize("lang", ["tr", "tur_Latn"])
def test_flores_sets_take_iso_or_flores_codes(tmp_path, name, index, lang):
    aligned(tmp_path, index, "tur_Latn.txt", NAMES, CAPTIONS)
    bench = read_benchmark(name, tmp_path, lang)
    assert bench.code == "tur_Latn" and bench.protocol.lang == "tr"  # Turkish text normalisation either way
    assert bench.protocol.records[1].captions == ["İki köpek koşuyor"]


def test_clip_benchmark_dataset_root_is_accepted(tmp_path):
    xtd10(tmp_path / "xtd10")
    assert read_benchmark("xtd10", tmp_path, "tr").folder == tmp_path / "xtd10"


# --- what is missing or malformed: one line each, saying what is expected and where to get it --------------


def error(name, root, lang="tr"):
    with pytest.raises(TurkclipError) as e:
        read_benchmark(name, root, lang)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_files_say_what_is_expected_and_where_to_get_it(tmp_path):
    message = error("xtd10", tmp_path)
    assert "test_image_names.txt" in message and "test_1kcaptions_tr.txt" in message
    assert "github.com/adobe-research/Cross-lingual-Test-Dataset-XTD10" in message
    assert "google.github.io/crossmodal-3600" in error("xm3600", tmp_path)
    assert "benchmark folder not found" in error("xtd200", tmp_path / "nowhere")

    (tmp_path / "test_image_names.txt").write_text("a.jpg\n")
    message = error("xtd10", tmp_path)
    assert "test_1kcaptions_tr.txt" in message and "Cross-lingual-Test-Dataset-XTD10" in message
    (tmp_path / "test_1kcaptions_tr.txt").write_text("bir kedi\n")
    message = error("xtd10", tmp_path)
    assert "images/" in message and "nllb-data.com/test/xtd10/images.tar.gz" in message


def test_misaligned_files_are_refused(tmp_path):
    aligned(tmp_path, "filenames.txt", "tur_Latn.txt", NAMES, CAPTIONS[:5])
    message = error("flickr30k-200", tmp_path)
    assert "5 lines" in message and "6 images" in message


def test_empty_caption_line_is_refused(tmp_path):
    aligned(tmp_path, "test_image_names.txt", "test_1kcaptions_tr.txt", NAMES, CAPTIONS[:2] + [" "] + CAPTIONS[3:])
    assert "test_1kcaptions_tr.txt:3: empty caption" in error("xtd10", tmp_path)


def test_image_listed_twice_is_refused(tmp_path):
    aligned(tmp_path, "test_image_names.txt", "tur_Latn.txt", NAMES[:5] + NAMES[:1], CAPTIONS)
    assert "listed twice (entries 1 and 6)" in error("xtd200", tmp_path)


def test_unknown_flores_language_asks_for_the_code(tmp_path):
    aligned(tmp_path, "test_image_names.txt", "tur_Latn.txt", NAMES, CAPTIONS)
    assert "FLORES-200 code" in error("xtd200", tmp_path, lang="xx")


@pytest.mark.parametrize("line, phrase", [
    ("{not json", "not valid JSON"),
    ('["a list"]', 'no "image/key"'),
    ('{"image/key": "0a"}', "no 'tr' captions"),
    ('{"image/key": "0a", "tr": {"caption": []}}', 'non-empty "caption" list'),
    ('{"image/key": "0a", "tr": {"caption": [""]}}', "empty caption"),
])
def test_malformed_xm3600_lines_name_the_line(tmp_path, line, phrase):
    good = json.dumps({"image/key": "0b", "tr": {"caption": ["bir kedi"]}})
    xm3600(tmp_path, lines=[good, line])
    message = error("xm3600", tmp_path)
    assert "captions.jsonl:2" in message and phrase in message


# --- scores under CLIP_benchmark's names -------------------------------------------------------------------


def topk_recall(scores: torch.Tensor, positives: torch.Tensor, k: int) -> float:
    """CLIP_benchmark's recall@k as its zeroshot_retrieval documents it: a query is a hit when any of its positives
    is among its k highest-scored candidates; the mean over queries, a fraction."""
    top = scores.topk(k, dim=1).indices
    return positives.gather(1, top).any(1).float().mean().item()


@pytest.mark.parametrize("seed", range(3))
def test_names_and_units_are_clip_benchmarks(seed):
    g = torch.Generator().manual_seed(seed)
    owner = torch.randint(0, 30, (70,), generator=g)
    owner[:30] = torch.arange(30)  # every image has a caption, some several (XM3600 with all captions)
    text, image = torch.randn(70, 16, generator=g), torch.randn(30, 16, generator=g)
    names = clip_benchmark_names(retrieval_metrics(text, image, owner))
    scores = text @ image.t()
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(70), owner] = True
    for k in (1, 5, 10):
        assert names[f"image_retrieval_recall@{k}"] == pytest.approx(topk_recall(scores, positives, k), abs=1e-6)
        assert names[f"text_retrieval_recall@{k}"] == pytest.approx(topk_recall(scores.t(), positives.t(), k), abs=1e-6)


def test_evaluate_benchmark_writes_both_protocols(tiny_model, tmp_path):
    xm3600(tmp_path / "xm3600")
    out = tmp_path / "m.json"
    assert main(["evaluate", "--model", str(tiny_model), "--benchmark", "xm3600", "--root", str(tmp_path),
                 "--cache-dir", "none", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"]["dataset"] == "xm3600" and result["benchmark"]["language"] == "tr"
    assert (result["n_images"], result["n_texts"]) == (6, 6)  # the protocol: the first caption of each image
    every = result["all_captions"]
    assert (every["n_images"], every["n_texts"]) == (6, 12)
    for metrics in (result, every):
        names = metrics["clip_benchmark"]
        for k in (1, 5, 10):
            assert names[f"image_retrieval_recall@{k}"] == pytest.approx(metrics["text_to_image"][f"R@{k}"] / 100)
            assert names[f"text_retrieval_recall@{k}"] == pytest.approx(metrics["image_to_text"][f"R@{k}"] / 100)


def one_line_error(capsys, *args) -> str:
    """`turkclip evaluate ARGS` fails with exit status 1 and a single line on stderr; that line."""
    assert main(["evaluate", *args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("turkclip evaluate: error: "), lines
    return lines[0]


def test_evaluate_xtd10_with_a_missing_image(tiny_model, tmp_path, capsys):
    xtd10(tmp_path)
    (tmp_path / "images" / NAMES[2]).unlink()
    message = one_line_error(capsys, "--model", str(tiny_model), "--benchmark", "xtd10", "--root", str(tmp_path))
    assert "1 of 6 images" in message and NAMES[2] in message and "--skip-bad-images" in message
    out = tmp_path / "m.json"
    assert main(["evaluate", "--model", str(tiny_model), "--benchmark", "xtd10", "--root", str(tmp_path),
                 "--skip-bad-images", "--cache-dir", "none", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["n_images"], result["n_texts"], result["skipped_images"]) == (5, 5, 1)  # as CLIP_benchmark skips it
    assert result["all_captions"]["clip_benchmark"] == result["clip_benchmark"]


@pytest.mark.parametrize("args, phrase", [
    (["--benchmark", "xtd10"], "needs --root"),
    (["--root", "somewhere"], "name the set with --benchmark"),
    (["--benchmark", "xtd10", "--root", "x", "--captions", "c.json"], "not with --captions"),
])
def test_benchmark_flag_errors(args, phrase, capsys):
    assert phrase in one_line_error(capsys, *args)
