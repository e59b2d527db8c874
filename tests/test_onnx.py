"""ONNX export of both roads and the torch-free runtime: same embeddings, same rankings, no torch, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the ONNX extras are not installed (pip install 'turkclip[onnx]')")
pytest.importorskip("onnx", reason="the ONNX extras are not installed (pip install 'turkclip[onnx]')")

from turkclip.onnx.export import export_onnx
from turkclip.onnx.runtime import OnnxEncoder
from turkclip.roads import load_clip
from turkclip.search.torch_encoder import TorchEncoder
from turkclip_train.cli import main

# Turkish case folding (İ/I), punctuation, English, one past the text tower's length
CAPTIONS = ["İstanbul'da kırmızı bir araba", "ISPARTA'DA İKİ KÖPEK koşuyor", "ılık bir gün", "a red car on the road",
            "sahilde  koşan\tüç köpek", "çok uzun bir cümle " * 40]
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def base_export(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "base"
    export_onnx(out, str(tiny_model))
    return out


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory) -> Path:
    """A LoRA adapter on both towers, with trained token rows, whose weights are not the zero start."""
    from turkclip.roads.adapters import LoraSettings, attach_lora

    clip = load_clip(str(tiny_model))
    rows = sorted(clip.text.token_ids(["İstanbul'da ılık"], "tr"))
    lora = attach_lora(clip.model, LoraSettings(r=2, alpha=4, dropout=0.0, towers="both", token_ids=rows))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name or "token_adapter" in name:
                p.normal_(std=0.5)
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    lora.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tower(tiny_model, tiny_encoder, tmp_path_factory) -> Path:
    """A text tower (encoder + mean pooling + projection) with e5's "query: " prompt and a non-trivial projection."""
    from turkclip.roads.text_tower import new_text_tower, swap_text_tower

    clip = load_clip(str(tiny_model))
    tower = new_text_tower(str(tiny_encoder), clip.model.config.projection_dim)
    tower.prompt = "query: "
    tower.max_length = 64  # within the tiny encoder's 80 positions: the long caption is cut
    folder = tmp_path_factory.mktemp("tower") / "tower"
    swap_text_tower(clip, tower).model.save_pretrained(folder)
    return folder


def _pixels(size: int, n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("road", ["base", "adapter", "text-tower"])
def test_onnx_embeddings_equal_torchs_on_both_roads(road, tiny_model, base_export, adapter, tower, tmp_path):
    flags = {"base": {}, "adapter": {"adapter": str(adapter)}, "text-tower": {"text_model": str(tower)}}[road]
    folder = base_export
    if road != "base":
        folder = tmp_path / "export"
        done, cosines = export_onnx(folder, str(tiny_model), **flags)
        assert done.road == road and min(cosines.values()) >= MIN_COSINE
    torch_side = TorchEncoder(load_clip(str(tiny_model), **flags))  # the road as trained: LoRA unmerged
    onnx_side = OnnxEncoder(folder)
    assert onnx_side.dim == torch_side.dim and onnx_side.image_size == torch_side.image_size
    assert onnx_side.logit_scale == pytest.approx(torch_side.logit_scale, rel=1e-6)
    for lang in ("tr", "en"):  # the same token ids (case folding, prompt, truncation, padding), the same vectors
        want = torch_side.clip.text(CAPTIONS, lang)
        got = onnx_side.tokens(CAPTIONS, lang)
        assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in want.items()}
        assert _cosines(onnx_side.texts(CAPTIONS, lang), torch_side.texts(CAPTIONS, lang)).min() >= MIN_COSINE
    pixels = _pixels(torch_side.image_size)
    assert _cosines(onnx_side.pixels(pixels), torch_side.pixels(pixels)).min() >= MIN_COSINE
    if road == "adapter":  # the adapter did change the model: the export is of the road, not of the base
        base = OnnxEncoder(base_export)
        assert _cosines(base.texts(CAPTIONS), onnx_side.texts(CAPTIONS)).min() < 0.99
        assert _cosines(base.pixels(pixels), onnx_side.pixels(pixels)).min() < 0.99
    if road == "text-tower":  # the prompt and the projection are part of the text side
        manifest = json.loads((folder / "turkclip-onnx.json").read_text(encoding="utf-8"))
        assert manifest["text"]["prompt"] == "query: " and not manifest["text"]["clip_normalize"]


def _json(capsys, *argv) -> object:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_search_and_classify_rank_as_torch_does(tiny_model, base_export, tiny_images, tmp_path, capsys):
    torch_index, onnx_index = tmp_path / "torch-idx", tmp_path / "onnx-idx"
    assert main(["index", str(tiny_images), "--output", str(torch_index), "--model", str(tiny_model), "--precision",
                 "fp32", "--no-progress"]) == 0
    assert main(["index", str(tiny_images), "--output", str(onnx_index), "--onnx", str(base_export),
                 "--no-progress"]) == 0
    capsys.readouterr()
    photo = str(tiny_images / "03.jpg")
    for query in (["kırmızı bir araba"], ["ISPARTA'DA İKİ KÖPEK"], ["--image", photo]):
        want = _json(capsys, "search", str(torch_index), *query, "-k", "10", "--json")
        for index in (torch_index, onnx_index):  # an ONNX index, and the torch index searched through the export
            got = _json(capsys, "search", str(index), *query, "-k", "10", "--json", "--onnx", str(base_export))
            assert [h["path"] for h in got] == [h["path"] for h in want]
            assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=2e-3)
    labels = ["kedi", "köpek", "kuş", "İstanbul", "ırmak"]
    images = [photo, str(tiny_images / "07.jpg")]
    want = _json(capsys, "classify", "--model", str(tiny_model), *images, "--labels", ",".join(labels), "--json")
    got = _json(capsys, "classify", "--onnx", str(base_export), *images, "--labels", ",".join(labels), "--json")
    for w, g in zip(want, got):
        assert [x["label"] for x in g["labels"]] == [x["label"] for x in w["labels"]]
        assert [x["prob"] for x in g["labels"]] == pytest.approx([x["prob"] for x in w["labels"]], abs=1e-4)


NO_TORCH = """
import json, sys
from fastapi.testclient import TestClient
from turkclip_train.cli import main
from turkclip.search.photo_index import open_index
from turkclip.search.photo_search import open_search
from turkclip_train.serve.app import create_app
index, export, photo, shard = sys.argv[1:]
folder = photo.rsplit("/", 1)[0]
codes = [main(["index", folder, "--output", index, "--onnx", export, "--no-progress"]),
         main(["index", folder, "--output", index, "--no-progress"]),  # an update: the index's own export
         main(["search", index, "kırmızı bir araba", "-k", "3"]),  # the same: no --onnx needed
         main(["search", index, "--image", photo, "-k", "3", "--onnx", export]),
         main(["classify", "--onnx", export, photo, "--labels", "kedi,köpek"]),
         main(["index", index + "-photos", "--shards", shard, "--output", index + "-shards", "--onnx", export,
               "--no-progress"])]
client = TestClient(create_app(open_search(open_index(index)), folder, allowed_hosts=["testserver"]))
answers = [client.get("/api/search", params={"q": "deniz"}).status_code,
           client.post("/api/classify", files={"photo": open(photo, "rb")},
                       data={"captions": "kedi\\nköpek"}).status_code]
print(json.dumps({"codes": codes, "answers": answers,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft"))}))
"""


def test_index_search_classify_and_serve_run_without_torch(base_export, tiny_images, tmp_path):
    pytest.importorskip("fastapi", reason="the web extras are not installed (pip install 'turkclip[app]')")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (pip install 'turkclip[test]')")
    shard = tmp_path / "00000.tar"  # two photos as WebDataset samples, for `index --shards`
    with tarfile.open(shard, "w") as tar:
        for key, name in (("a", "04.jpg"), ("b", "05.jpg")):
            tar.add(tiny_images / name, arcname=f"{key}.jpg")
    run = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "idx"), str(base_export),
                          str(tiny_images / "03.jpg"), str(shard)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0, 0, 0], "answers": [200, 200], "heavy": []}
    assert sorted(p.name for p in (tmp_path / "idx-photos").iterdir()) == ["a.jpg", "b.jpg"]
    assert "2 photos unpacked from the shards" in run.stdout


def _one_line_error(capsys, argv, phrase):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert phrase in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_missing_or_damaged_export_is_a_one_line_error(base_export, tiny_images, tmp_path, capsys):
    photo = str(tiny_images / "00.jpg")

    def damaged(name: str, change) -> Path:
        folder = tmp_path / name
        shutil.copytree(base_export, folder)
        change(folder)
        return folder

    def manifest_edit(**fields):
        def change(folder):
            path = folder / "turkclip-onnx.json"
            data = json.loads(path.read_text(encoding="utf-8"))
            for key, value in fields.items():
                side, _, field = key.partition("__")
                (data[side] if field else data)[field or side] = value
            path.write_text(json.dumps(data), encoding="utf-8")
        return change

    cases = [
        (tmp_path / "nowhere", "ONNX folder not found"),
        (damaged("empty", lambda f: (f / "turkclip-onnx.json").unlink()), "is not an ONNX export"),
        (damaged("bad-json", lambda f: (f / "turkclip-onnx.json").write_text("{not json")), "is damaged"),
        (damaged("bad-type", manifest_edit(dim="16")), "'dim' field"),
        (damaged("bad-mean", manifest_edit(image__mean=[0.5, 0.5])), "mean/std"),
        (damaged("escape", manifest_edit(text__file="../../etc/passwd")), "is incomplete"),
        (damaged("no-text", lambda f: (f / "text.onnx").unlink()), "is incomplete"),
        (damaged("cut-text", lambda f: (f / "text.onnx").write_bytes((f / "text.onnx").read_bytes()[:4000])),
         "is not a usable ONNX model"),
        (damaged("bad-tokenizer", lambda f: (f / "tokenizer.json").write_text("{")), "is not a usable tokenizer"),
    ]
    for folder, phrase in cases:
        _one_line_error(capsys, ["classify", "--onnx", str(folder), photo, "--labels", "kedi"], phrase)
    big = damaged("big", lambda f: (f / "turkclip-onnx.json").write_text(" " * (2 << 20)))
    _one_line_error(capsys, ["classify", "--onnx", str(big), photo, "--labels", "kedi"], "larger than")
    _one_line_error(capsys, ["classify", "--onnx", str(base_export), "--model", "x", photo, "--labels", "kedi"],
                    "--model: not with the ONNX export")
    _one_line_error(capsys, ["export-onnx", "--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")],
                    "model folder not found")
    _one_line_error(capsys, ["export-onnx", "--model", "x", "--output", str(base_export)], "not empty")


def test_an_export_of_another_model_may_not_search_an_index(tiny_model, base_export, adapter, tiny_images, tmp_path,
                                                             capsys):
    assert main(["index", str(tiny_images), "--output", str(tmp_path / "idx"), "--onnx", str(base_export),
                 "--no-progress"]) == 0
    export_onnx(tmp_path / "adapted", str(tiny_model), adapter=str(adapter))
    _one_line_error(capsys, ["search", str(tmp_path / "idx"), "kedi", "--onnx", str(tmp_path / "adapted")],
                    "was built with model")
    _one_line_error(capsys, ["index", str(tiny_images), "--output", str(tmp_path / "idx"), "--onnx",
                             str(tmp_path / "adapted")], "was built with model")


def test_int8_export_keeps_the_ranking_close(tiny_model, base_export, tmp_path):
    done, cosines = export_onnx(tmp_path / "int8", str(tiny_model), int8=True)
    assert done.weights == "int8" and min(cosines.values()) > 0.9
    fp32, int8 = OnnxEncoder(base_export), OnnxEncoder(done.folder)
    pixels = _pixels(fp32.image_size, 20)
    gallery = fp32.pixels(pixels)
    overlap = [len(set(np.argsort(-gallery @ q)[:5]) & set(np.argsort(-gallery @ p)[:5])) / 5
               for q, p in zip(int8.texts(CAPTIONS), fp32.texts(CAPTIONS))]
    assert np.mean(overlap) >= 0.6


def test_each_side_is_opened_only_when_it_is_needed(base_export):
    """A text query never loads the image graph (and a photo query never the text graph and tokenizer)."""
    texts, photos = OnnxEncoder(base_export), OnnxEncoder(base_export)
    texts.texts(["kırmızı bir araba"])
    photos.pixels(_pixels(photos.image_size, 1))
    assert {"_text_session", "_tokenizer"} <= set(vars(texts)) and "_image_session" not in vars(texts)
    assert "_image_session" in vars(photos) and not {"_text_session", "_tokenizer"} & set(vars(photos))
