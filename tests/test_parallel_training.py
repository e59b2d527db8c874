"""The text-tower road taught by parallel sentences (--parallel-captions): text only or beside images, --text-layers,
--head-init lstsq, and the flags that cannot go with them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from turkclip.embedding.embed import embed_texts
from turkclip.errors import TurkclipError
from turkclip.roads import load_clip
from turkclip_train.config import TrainConfig
from turkclip_train.train import train

CPU = torch.device("cpu")
PAIRS = [("a red car", "kırmızı bir araba"), ("two dogs on the beach", "sahilde iki köpek"),
         ("a cat in the snow", "karda bir kedi"), ("a blue door", "mavi bir kapı"),
         ("children playing", "oynayan çocuklar"), ("a small white boat", "küçük beyaz bir tekne"),
         ("an old man", "yaşlı bir adam"), ("three green apples", "üç yeşil elma")]


def write_pairs(path, pairs=PAIRS, header="en\ttr\n"):
    path.write_text(header + "".join(f"{en}\t{tr}\n" for en, tr in pairs), encoding="utf-8")
    return path


def distance_to_teacher(tiny_model, tower_folder) -> float:
    """The parallel loss of a saved tower: both sides of each pair against the base's own embedding of the English."""
    base = load_clip(str(tiny_model))
    teacher = F.normalize(embed_texts(base.model, base.text, [en for en, _ in PAIRS], "en", CPU), dim=-1)
    road = load_clip(str(tiny_model), text_model=str(tower_folder))
    total = 0.0
    for side in (0, 1):
        student = F.normalize(embed_texts(road.model, road.text, [p[side] for p in PAIRS], "tr", CPU), dim=-1)
        total += (student - teacher).pow(2).sum(-1).mean().item()
    return total / 2


def config(tmp_path, tiny_model, tiny_encoder, name, **more) -> TrainConfig:
    return TrainConfig(**{"parallel_captions": str(write_pairs(tmp_path / "pairs.tsv")), "output": str(tmp_path / name),
                          "model": str(tiny_model), "text_model": str(tiny_encoder), "batch_size": 4, "epochs": 4,
                          "lr": 1e-3, "precision": "fp32", "progress": False, "cache_dir": str(tmp_path / "cache"),
                          **more})


@pytest.mark.parametrize("train_mode, layers", [("full", 1), ("lora", None)])
def test_parallel_sentences_alone_teach_the_tower_without_any_image(tiny_model, tiny_encoder, tmp_path, monkeypatch,
                                                                    one_thread, train_mode, layers):
    import turkclip_train.train as train_module

    monkeypatch.setattr(train_module, "training_sets", lambda *a: pytest.fail("an image source was read"))
    monkeypatch.setattr(train_module, "cached_image_embeddings", lambda *a: pytest.fail("an image was embedded"))
    train(config(tmp_path, tiny_model, tiny_encoder, "start", max_steps=1, lr=1e-9, text_train=train_mode,
                 text_layers=layers))
    trained = train(config(tmp_path, tiny_model, tiny_encoder, "trained", text_train=train_mode, text_layers=layers,
                           epochs=10, lr=1e-2))
    assert (trained["train_images"], trained["train_pairs"], trained["steps"]) == (0, len(PAIRS), 10 * len(PAIRS) // 4)
    before, after = (distance_to_teacher(tiny_model, tmp_path / n) for n in ("start", "trained"))
    assert after < 0.5 * before, (before, after)
    assert json.loads((tmp_path / "trained" / "train_config.json").read_text())["parallel_captions"]


def test_lstsq_head_starts_closer_to_the_teacher_than_a_random_head(tiny_model, tiny_encoder, tmp_path, one_thread):
    for init in ("random", "lstsq"):  # one step at a vanishing rate: what is saved is the head as it started
        train(config(tmp_path, tiny_model, tiny_encoder, init, head_init=init, max_steps=1, lr=1e-9, text_train="full",
                     text_layers=1))
    random, lstsq = (distance_to_teacher(tiny_model, tmp_path / n) for n in ("random", "lstsq"))
    assert lstsq < 0.5 * random, (random, lstsq)


def test_parallel_sentences_beside_image_captions(tiny_model, tiny_encoder, tiny_images, tmp_path, monkeypatch,
                                                  one_thread):
    from turkclip.roads.tower import TowerRoad

    rows = ["image,caption,split"] + [f"{i:02d}.jpg,resim {i},{'train' if i < 9 else 'val'}" for i in range(12)]
    (tmp_path / "tr.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    steps, real = [], TowerRoad.loss

    def recording(self, step):
        steps.append([it.target is not None for it in step.items])
        return real(self, step)

    monkeypatch.setattr(TowerRoad, "loss", recording)
    summary = train(config(tmp_path, tiny_model, tiny_encoder, "mixed", captions=str(tmp_path / "tr.csv"),
                           images=str(tiny_images), epochs=1, text_train="head"))
    assert (summary["train_images"], summary["train_pairs"], summary["val_images"]) == (9, len(PAIRS), 3)
    assert len(steps) == 2  # the image batches decide the steps: 9 images, batches of 4 (the last one dropped)
    assert all(flags.count(False) == 4 and flags.count(True) == 8 for flags in steps)  # 4 captions + 4 pairs each


@pytest.mark.parametrize("more, phrase", [
    ({"text_model": None}, "--parallel-captions teaches the text-tower road"),
    ({"objective": "mix"}, "--objective distill/mix is about the captions of images"),
    ({"augment": "flip"}, "--augment is about the captions of images"),
    ({"text_train": "head", "text_layers": 1}, "with --text-train head none does"),
])
def test_flags_that_cannot_work_with_parallel_sentences_are_one_line_errors(tiny_model, tiny_encoder, tmp_path, more,
                                                                            phrase):
    with pytest.raises(TurkclipError, match=phrase):
        train(config(tmp_path, tiny_model, tiny_encoder, "o", **more))


def test_the_cli_names_the_first_bad_line_and_skips_bad_lines_when_asked(tiny_model, tiny_encoder, tmp_path, capsys,
                                                                          one_thread):
    from turkclip_train.cli import main

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("en\ttr\n" + "".join(f"{en}\t{tr}\n" for en, tr in PAIRS) + "no translation\n", encoding="utf-8")
    args = ["train", "--parallel-captions", str(pairs), "--model", str(tiny_model), "--text-model", str(tiny_encoder),
            "--batch-size", "4", "--epochs", "1", "--precision", "fp32", "--no-progress",
            "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--output", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("turkclip train: error: 1 bad line in") and f"{pairs}:10: expected 2 tab-separated" in err
    assert "\n" not in err and "--skip-bad-lines" in err
    assert main([*args, "--output", str(tmp_path / "b"), "--skip-bad-lines"]) == 0
    assert "skipped 1 bad lines" in capsys.readouterr().err


def test_tower_only_flags_are_refused_elsewhere_and_lstsq_keeps_a_trained_towers_head(tmp_path):
    from turkclip.roads.sentence_folder import ALIGNMENT_FILE
    from turkclip_train.config import road_for

    for cfg, phrase in ((TrainConfig(text_layers=2), "--text-layers is for the text-tower road"),
                        (TrainConfig(head_init="lstsq"), "--head-init is for the text-tower road")):
        with pytest.raises(TurkclipError, match=phrase):
            road_for(cfg)
    (tmp_path / ALIGNMENT_FILE).write_text("{}")  # a tower turkclip trained, to train further
    with pytest.raises(TurkclipError, match="keeps its head"):
        road_for(TrainConfig(text_model=str(tmp_path), head_init="lstsq")).check()
