"""`turkclip search` and `turkclip classify`: JSON shape and order, refusals, the one text-query route."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from turkclip.search import queries
from turkclip.search.classify import TURKISH_TEMPLATES, label_embeddings
from turkclip.search.photo_index import build_index
from turkclip.search.photo_search import Searcher
from turkclip_train.cli import main


@pytest.fixture
def index(tiny_model, tiny_images, tmp_path):
    (tiny_images / "sub").mkdir()
    (tiny_images / "07.jpg").rename(tiny_images / "sub" / "07.jpg")
    build_index(tiny_images, tmp_path / "idx", str(tiny_model), progress=False)
    return tmp_path / "idx"


def _json(capsys, argv) -> object:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_text_search_json_is_best_first_with_relative_paths(index, tiny_images, capsys):
    hits = _json(capsys, ["search", str(index), "kırmızı bir araba", "-k", "5", "--json"])
    assert len(hits) == 5 and all(set(h) == {"path", "score"} for h in hits)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all((tiny_images / h["path"]).is_file() and not h["path"].startswith("/") for h in hits)
    everything = _json(capsys, ["search", str(index), "kırmızı bir araba", "-k", "100", "--json"])
    assert len(everything) == 12 and everything[:5] == hits  # k is capped at the gallery; same ranking


def test_image_search_finds_the_photo_itself_first(index, tiny_images, capsys):
    hits = _json(capsys, ["search", str(index), "--image", str(tiny_images / "sub" / "07.jpg"), "--json"])
    assert hits[0]["path"] == "sub/07.jpg" and hits[0]["score"] == pytest.approx(1.0, abs=1e-2)


def test_search_refuses_another_model_and_bad_input(index, tmp_path, capsys):
    cases = [
        (["search", str(index), "kedi", "--model", "openai/clip-vit-base-patch32"], "was built with model"),
        (["search", str(index), "   "], "empty"),
        (["search", str(index)], "give a text query or --image"),
        (["search", str(tmp_path), "kedi"], "not a photo index"),
        (["search", str(index), "--image", str(tmp_path / "none.jpg")], "image not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_exact_search_ranks_like_a_full_sort():
    rng = np.random.default_rng(0)
    vectors = F.normalize(torch.from_numpy(rng.standard_normal((500, 16)).astype(np.float32)), dim=-1)
    q = vectors[:3] + 0.1
    scores, rows = Searcher(vectors, use_faiss=False).search(q, 10)
    full = (q @ vectors.T).numpy()
    assert (rows == np.argsort(-full, axis=1)[:, :10]).all()
    assert np.allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :10], atol=1e-5)


def test_faiss_search_agrees_with_exact_on_clustered_vectors():
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install 'turkclip[app]')")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32))
    vectors = centres[rng.integers(0, 50, 4000)] + 0.5 * rng.standard_normal((4000, 32))
    vectors = F.normalize(torch.from_numpy(vectors.astype(np.float32)), dim=-1)
    q = vectors[rng.choice(4000, 50, replace=False)] + 0.05
    approx = Searcher(vectors, use_faiss=True)
    assert approx.kind == "faiss-ivf"
    _, got = approx.search(q, 10)
    _, want = Searcher(vectors, use_faiss=False).search(q, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall >= 0.95


def test_classify_json_probabilities(tiny_model, tiny_images, capsys, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("kedi\nköpek\nkuş\n", encoding="utf-8")
    images = [str(tiny_images / "00.jpg"), str(tiny_images / "01.jpg")]
    out = _json(capsys, ["classify", "--model", str(tiny_model), *images, "--labels-file", str(labels), "--json"])
    assert [o["image"] for o in out] == images
    for o in out:
        probs = [entry["prob"] for entry in o["labels"]]
        assert sorted(entry["label"] for entry in o["labels"]) == sorted(["kedi", "köpek", "kuş"])
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
    top1 = _json(capsys, ["classify", "--model", str(tiny_model), images[0], "--labels", "kedi,köpek,kuş", "--json", "-k", "1"])
    assert top1[0]["labels"] == out[0]["labels"][:1]
    assert main(["classify", "--model", str(tiny_model), images[0], "--labels", " , "]) == 1
    assert "at least one label" in capsys.readouterr().err


def test_labels_are_ensembles_of_turkish_templates(tiny_model):
    from turkclip.roads import load_clip

    clip = load_clip(str(tiny_model))
    got = label_embeddings(clip, ["kedi", "köpek"])
    each = queries.encode_queries(clip, [t.format("köpek") for t in TURKISH_TEMPLATES])
    assert torch.allclose(got[1], F.normalize(each.mean(0), dim=-1), atol=1e-5)


def test_every_text_query_goes_through_encode_queries(index, tiny_model, tiny_images, monkeypatch, capsys):
    """The hook a swapped text tower plugs into: search queries and classify's label prompts both call it."""
    seen = []
    real = queries.encode_queries
    monkeypatch.setattr(queries, "encode_queries", lambda clip, texts, *a, **k: seen.extend(texts) or real(clip, texts, *a, **k))
    assert main(["search", str(index), "deniz kenarı", "--json"]) == 0
    assert main(["classify", "--model", str(tiny_model), str(tiny_images / "00.jpg"), "--labels", "kedi"]) == 0
    capsys.readouterr()
    assert "deniz kenarı" in seen and "bir kedi fotoğrafı" in seen


@pytest.mark.parametrize("command", ["index", "search", "classify", "serve"])
def test_photo_commands_explain_themselves(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith(f"usage: turkclip {command}")


def test_server_side_faiss_index_is_saved_and_reused(index, monkeypatch):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install 'turkclip[app]')")
    from turkclip.search import photo_search as search
    from turkclip.search.photo_index import open_index

    idx = open_index(index)
    built = search.open_search(idx, use_faiss=True)
    assert built.searcher.kind == "faiss-ivf" and len(list(index.glob("faiss-ivf-*.index"))) == 1
    exact = search.open_search(idx, use_faiss=False)
    assert [h.path for h in built.text("kedi", 5)] == [h.path for h in exact.text("kedi", 5)]  # one list: exhaustive

    def no_build(*a, **k):
        raise AssertionError("the saved FAISS index was not reused")

    monkeypatch.setattr(search, "build_ivf", no_build)
    assert search.open_search(idx, use_faiss=True).searcher.kind == "faiss-ivf"
