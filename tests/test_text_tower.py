"""The second road: a swapped text tower — training modes, objectives, the sentence-transformers folder, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TOKENIZER

CAPTIONS = ["kırmızı bir araba", "Sahilde koşan İki köpek", "ISPARTA'da bir kedi", "karda oynayan çocuklar",
            "a red car", "two dogs running on the beach"]


def _tower_clip(tiny_model, encoder, mode="lora"):
    from turkclip.roads import load_clip
    from turkclip.roads.text_tower import new_text_tower, swap_text_tower

    clip = load_clip(str(tiny_model))
    tower = new_text_tower(str(encoder), clip.model.config.projection_dim)
    tower.prepare_training(mode)
    return clip, swap_text_tower(clip, tower, source=str(encoder))


@pytest.mark.parametrize("mode, trains", [("head", {"dense"}), ("lora", {"dense", "lora"}), ("full", {"dense", "encoder"})])
def test_training_modes_train_what_they_say(tiny_model, tiny_encoder, mode, trains):
    _, swapped = _tower_clip(tiny_model, tiny_encoder, mode)
    names = [n for n, p in swapped.model.named_parameters() if p.requires_grad]
    assert "logit_scale" in names
    assert not any(n.startswith("clip.") for n in names), "the base CLIP must stay frozen"
    has = {"dense": any(".dense." in n for n in names), "lora": any("lora_" in n for n in names),
           "encoder": any(".encoder." in n and "lora_" not in n for n in names)}
    assert {k for k, v in has.items() if v} == trains


def test_head_mode_remembers_features_and_keeps_encoder_frozen(tiny_model, tiny_encoder):
    _, swapped = _tower_clip(tiny_model, tiny_encoder, "head")
    model = swapped.model.train()
    assert not model.tower.encoder.training  # no dropout in a frozen encoder: remembered features stay valid
    tokens = swapped.text(CAPTIONS)
    first = model.get_text_features(**tokens)
    assert len(model.tower._pooled_memo) == len(CAPTIONS)
    # Memo lookups give the same embeddings as computing afresh, in another order and padding.
    order = [3, 1, 0]
    again = model.get_text_features(**swapped.text([CAPTIONS[i] for i in order]))
    torch.testing.assert_close(again, first[order], atol=1e-5, rtol=1e-5)
    model.tower.frozen_encoder = False
    torch.testing.assert_close(model.get_text_features(**tokens), first, atol=1e-5, rtol=1e-5)


def test_tower_answers_like_clip_in_evaluate_and_bucketing_is_exact(tiny_model, tiny_encoder):
    from turkclip.embedding.embed import text_features

    _, swapped = _tower_clip(tiny_model, tiny_encoder, "lora")
    model = swapped.model.eval()
    tokens = swapped.text(CAPTIONS)
    with torch.no_grad():
        whole = model.get_text_features(**tokens)
        bucketed = text_features(model, **tokens, buckets=3)  # a bidirectional encoder with a mask: exact too
    torch.testing.assert_close(bucketed, whole, atol=1e-5, rtol=1e-5)


def test_saved_folder_is_a_sentence_transformer_with_turkclips_embeddings(tiny_model, tiny_encoder, tmp_path):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is a test dependency")
    from turkclip.embedding.embed import embed_texts
    from turkclip.roads import load_clip

    _, swapped = _tower_clip(tiny_model, tiny_encoder, "lora")
    with torch.no_grad():  # make LoRA non-zero, so merging it into the saved encoder matters
        for n, p in swapped.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    folder = tmp_path / "tower"
    swapped.model.save_pretrained(folder)
    for f in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "1_Pooling/config.json",
              "2_Dense/config.json", "2_Dense/model.safetensors", "model.safetensors", "turkclip_text_tower.json"):
        assert (folder / f).is_file(), f
    assert not list(folder.glob("*.bin")) and not (folder / "adapter_config.json").exists()  # LoRA merged, safetensors

    ours_before_save = embed_texts(swapped.model.eval(), swapped.text, CAPTIONS, "tr", torch.device("cpu"))
    reloaded = load_clip(str(tiny_model), text_model=str(folder))
    ours = embed_texts(reloaded.model, reloaded.text, CAPTIONS, "tr", torch.device("cpu"))
    theirs = torch.from_numpy(st.SentenceTransformer(str(folder), device="cpu").encode(CAPTIONS))
    torch.testing.assert_close(ours, ours_before_save, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    assert theirs.shape[1] == reloaded.model.config.projection_dim  # comparable with get_image_features


def test_tower_refuses_another_base(tiny_model, tiny_encoder, tmp_path):
    from turkclip.errors import TurkclipError
    from turkclip.models.architectures import init_model
    from turkclip.roads import load_clip

    _, swapped = _tower_clip(tiny_model, tiny_encoder, "head")
    swapped.model.save_pretrained(tmp_path / "tower")
    other = tmp_path / "other-base"
    init_model("tiny", TOKENIZER, other, seed=1)  # same shapes, other weights
    with pytest.raises(TurkclipError, match="aligned to base"):
        load_clip(str(other), text_model=str(tmp_path / "tower"))


def test_distill_loss_pulls_toward_teacher_direction():
    from turkclip.roads.loss import distill_loss

    teacher = torch.randn(4, 8)
    assert distill_loss(teacher * 3.0, teacher).item() == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    assert distill_loss(-teacher, teacher).item() == pytest.approx(4.0, abs=1e-5)  # opposite: 2 - 2·(-1)


def _pairs(tmp_path, images: Path) -> tuple[Path, Path]:
    """Turkish captions (train/val) and English captions of the same 12 images."""
    tr = ["image,caption,split"] + [f"{i:02d}.jpg,{CAPTIONS[i % 4]} {i},{'train' if i < 9 else 'val'}" for i in range(12)]
    en = ["image,caption"] + [f"{i:02d}.jpg,{CAPTIONS[4 + i % 2]} number {i}" for i in range(12)]
    (tmp_path / "tr.csv").write_text("\n".join(tr) + "\n", encoding="utf-8")
    (tmp_path / "en.csv").write_text("\n".join(en) + "\n", encoding="utf-8")
    return tmp_path / "tr.csv", tmp_path / "en.csv"


@pytest.mark.parametrize("objective, mode", [("mix", "lora"), ("distill", "head"), ("contrastive", "full")])
def test_train_writes_a_tower_that_loads_and_learnt(tiny_model, tiny_encoder, tiny_images, tmp_path, objective, mode):
    from turkclip.embedding.embed import embed_texts
    from turkclip.roads import load_clip
    from turkclip.roads.text_tower import load_text_tower
    from turkclip_train.config import TrainConfig
    from turkclip_train.train import train

    tr, en = _pairs(tmp_path, tiny_images)
    out = tmp_path / "tower"
    summary = train(TrainConfig(captions=str(tr), images=str(tiny_images), output=str(out), model=str(tiny_model),
                                text_model=str(tiny_encoder), text_train=mode, objective=objective,
                                rehearsal_captions=str(en), rehearsal_ratio=0.5, epochs=2, batch_size=4, lr=1e-2,
                                precision="fp32", progress=False))
    assert summary["steps"] == 4 and summary["val_images"] == 3
    alignment = json.loads((out / "turkclip_text_tower.json").read_text())
    assert alignment["base_model"] == str(tiny_model) and alignment["projection_dim"] == 16
    _, fresh = _tower_clip(tiny_model, tiny_encoder, mode)
    trained, _ = load_text_tower(out)
    # The projection starts random (seeded), so compare what training moves: the encoder's output or the head.
    moved = (trained.dense.weight - fresh.model.tower.dense.weight).abs().max()
    assert moved > 1e-4, "training changed nothing"
    clip = load_clip(str(tiny_model), text_model=str(out))
    ours = embed_texts(clip.model, clip.text, CAPTIONS, "tr", torch.device("cpu"))
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is a test dependency")
    theirs = torch.from_numpy(st.SentenceTransformer(str(out), device="cpu").encode(CAPTIONS))
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)  # every mode's output loads as a SentenceTransformer


def test_distill_without_english_captions_is_one_line(tiny_model, tiny_encoder, tiny_images, tmp_path):
    from turkclip.errors import TurkclipError
    from turkclip_train.config import TrainConfig
    from turkclip_train.train import train

    tr, _ = _pairs(tmp_path, tiny_images)
    with pytest.raises(TurkclipError, match="needs --rehearsal-captions"):  # before any model is built
        train(TrainConfig(captions=str(tr), images=str(tiny_images), output=str(tmp_path / "o"), model=str(tiny_model),
                          text_model=str(tiny_encoder), objective="distill", epochs=1, batch_size=4, progress=False))


def _one_line(capsys, *args) -> str:
    from turkclip_train.cli import main

    assert main(list(args)) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_text_models_are_one_line_errors(tiny_model, tiny_encoder, tiny_images, tmp_path, capsys):
    tr, _ = _pairs(tmp_path, tiny_images)
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text((tiny_encoder / "config.json").read_text())
    (no_tokenizer / "model.safetensors").write_bytes((tiny_encoder / "model.safetensors").read_bytes())
    remote_code = tmp_path / "remote-code"  # asks transformers to run its own modelling code
    shutil.copytree(tiny_encoder, remote_code)
    config = json.loads((remote_code / "config.json").read_text())
    (remote_code / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Evil"}}))
    cases = {tmp_path: "no config.json", tiny_model: "is a CLIP model", no_tokenizer: "has no tokenizer",
             remote_code: "asks to run code of its own (config.json has an auto_map)"}
    for folder, phrase in cases.items():
        line = _one_line(capsys, "train", "--model", str(tiny_model), "--text-model", str(folder), "--captions", str(tr),
                         "--images", str(tiny_images), "--output", str(tmp_path / "out"), "--cache-dir", "none")
        assert phrase in line, (folder, line)
    assert "not both" in _one_line(capsys, "predict", "--model", str(tiny_model), "--adapter", str(tmp_path),
                                   "--text-model", str(tmp_path), str(tiny_images / "00.jpg"), "bir kedi")
    assert "not a text tower trained by turkclip" in _one_line(
        capsys, "evaluate", "--model", str(tiny_model), "--text-model", str(tiny_encoder), "--captions", str(tr),
        "--images", str(tiny_images), "--split", "val")
    assert "--compare" in _one_line(
        capsys, "evaluate", "--model", str(tiny_model), "--text-model", str(tiny_encoder), "--adapter", str(tmp_path),
        "--captions", str(tr), "--images", str(tiny_images), "--split", "val")


def test_photo_index_searches_and_classifies_through_a_text_tower(tiny_model, tiny_encoder, tiny_images, tmp_path):
    from turkclip.errors import TurkclipError
    from turkclip.roads import load_clip
    from turkclip.search.classify import classify
    from turkclip.search.photo_index import build_index, open_index
    from turkclip.search.photo_search import open_search
    from turkclip.search.queries import encode_queries

    _, swapped = _tower_clip(tiny_model, tiny_encoder, "head")
    tower = tmp_path / "tower"
    swapped.model.save_pretrained(tower)
    report = build_index(tiny_images, tmp_path / "index", str(tiny_model), text_model=str(tower), progress=False)
    assert report.index.text_model == str(tower.resolve())
    (tiny_images / "new.jpg").write_bytes((tiny_images / "00.jpg").read_bytes())  # an update without --text-model
    updated = build_index(tiny_images, tmp_path / "index", progress=False).index  # keeps the recorded tower
    assert updated.text_model == str(tower.resolve()) and "new.jpg" in updated.paths
    (tiny_images / "new.jpg").unlink()
    build_index(tiny_images, tmp_path / "index", progress=False)

    engine = open_search(open_index(tmp_path / "index"))  # the recorded tower is used without being named again
    hits = engine.text("kırmızı bir araba", k=3)
    clip = load_clip(str(tiny_model), text_model=str(tower))
    query = torch.nn.functional.normalize(encode_queries(clip, ["kırmızı bir araba"], "tr", torch.device("cpu"), "fp32"),
                                          dim=-1)
    expected = (report.index.embeddings @ query[0]).topk(3)
    assert [h.path for h in hits] == [report.index.paths[i] for i in expected.indices.tolist()]
    assert [h.score for h in hits] == pytest.approx(expected.values.tolist(), abs=1e-3)
    ranked = classify(clip, [tiny_images / "00.jpg"], ["kedi", "köpek"], lang="tr", device="cpu")
    assert sum(p for _, p in ranked[0]) == pytest.approx(1.0, abs=1e-4)

    # an index built for an adapter holds that adapter's photo embeddings: a text tower may not search it
    from dataclasses import replace

    with pytest.raises(TurkclipError, match="built with adapter"):
        open_search(replace(open_index(tmp_path / "index"), adapter="/some/adapter"), text_model=str(tower))


def test_index_update_records_a_new_tower_and_refuses_one_on_an_adapter_index(tiny_model, tiny_encoder, tiny_images,
                                                                              tmp_path, capsys):
    from turkclip.errors import TurkclipError
    from turkclip.roads import load_clip
    from turkclip.roads.adapters import LoraSettings, attach_lora
    from turkclip.search.photo_index import INDEX_FILE, build_index, open_index
    from turkclip_train.cli import main

    _, swapped = _tower_clip(tiny_model, tiny_encoder, "head")
    tower = tmp_path / "tower"
    swapped.model.save_pretrained(tower)
    build_index(tiny_images, tmp_path / "plain", str(tiny_model), progress=False)
    report = build_index(tiny_images, tmp_path / "plain", text_model=str(tower), progress=False)  # nothing else changed
    assert report.kept == 12 and report.added == 0
    assert report.index.text_model == open_index(tmp_path / "plain").text_model == str(tower.resolve())
    with pytest.raises(TurkclipError, match="not a text tower trained by turkclip"):  # never recorded unchecked
        build_index(tiny_images, tmp_path / "plain", text_model=str(tiny_encoder), progress=False)
    assert open_index(tmp_path / "plain").text_model == str(tower.resolve())

    lora = attach_lora(load_clip(str(tiny_model)).model, LoraSettings(r=2, alpha=2, dropout=0.0, towers="both"))
    lora.save_pretrained(tmp_path / "adapter")
    build_index(tiny_images, tmp_path / "adapted", str(tiny_model), str(tmp_path / "adapter"), progress=False)
    before = (tmp_path / "adapted" / INDEX_FILE).read_bytes()
    assert main(["index", str(tiny_images), "--output", str(tmp_path / "adapted"), "--text-model", str(tower)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was built with adapter" in err and "new --output" in err
    assert (tmp_path / "adapted" / INDEX_FILE).read_bytes() == before
    assert open_index(tmp_path / "adapted").text_model is None
