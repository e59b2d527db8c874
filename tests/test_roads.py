"""The roads as objects (turkclip/roads/): chosen by flags, each owning what trains, its learning rates and its output;
and the quick-trial flags of `turkclip train` (--max-steps, --limit-images)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_captioned_images
from turkclip.errors import TurkclipError
from turkclip.roads.full import FullRoad
from turkclip.roads.lora import LoraRoad
from turkclip.roads.road import TrainingData
from turkclip.roads.tower import TowerRoad
from turkclip_train.config import TrainConfig, road_for
from turkclip_train.train import train


def test_the_flags_choose_the_road():
    assert isinstance(road_for(TrainConfig()), LoraRoad)
    assert isinstance(road_for(TrainConfig(text_model="enc")), TowerRoad)
    assert isinstance(road_for(TrainConfig(road="full")), FullRoad)
    for cfg, phrase in ((TrainConfig(road="tower"), "--road tower needs --text-model"),
                        (TrainConfig(road="lora", text_model="enc"), "does not go with --road lora"),
                        (TrainConfig(text_model="enc", train_token_rows="new"), "own vocabulary")):
        with pytest.raises(TurkclipError, match=phrase):
            road_for(cfg)


def test_tower_road_trains_head_encoder_and_temperature_at_their_own_rates(tiny_model, tiny_encoder):
    from turkclip.roads import load_clip

    road = TowerRoad(str(tiny_encoder), "lora", head_lr=1e-2, encoder_lr=1e-4, scale_lr=1e-5)
    data = TrainingData(object(), None, "en", torch.device("cpu"), "fp32", None)  # image–caption data: a temperature
    clip = road.build(load_clip(str(tiny_model)), data)
    groups = road.param_groups(clip.model, lr=1e-3, weight_decay=0.1)
    by_id = {id(p): g["lr"] for g in groups for p in g["params"]}
    names = {n: by_id.get(id(p)) for n, p in clip.model.named_parameters() if p.requires_grad}
    assert set(names.values()) == {1e-2, 1e-4, 1e-5} and None not in names.values()  # every trained weight, once
    assert all(lr == 1e-2 for n, lr in names.items() if ".dense." in n)
    assert all(lr == 1e-4 for n, lr in names.items() if "lora_" in n)
    assert names["logit_scale"] == 1e-5
    assert sum(len(g["params"]) for g in groups) == len(names)
    # Without per-part rates every part trains at --lr, as before the parts existed.
    plain = TowerRoad(str(tiny_encoder), "lora")
    plain.build(load_clip(str(tiny_model)), data)
    assert {g["lr"] for g in plain.param_groups(plain.clip.model, lr=1e-3, weight_decay=0.0)} == {1e-3}
    # Parallel sentences alone (no image–caption data) have no contrastive loss: the temperature does not train.
    text_only = TowerRoad(str(tiny_encoder), "lora", scale_lr=1e-5)
    text_only.build(load_clip(str(tiny_model)), TrainingData(None, None, "en", torch.device("cpu"), "fp32", None))
    assert not text_only.clip.model.logit_scale.requires_grad
    assert 1e-5 not in {g["lr"] for g in text_only.param_groups(text_only.clip.model, lr=1e-3, weight_decay=0.0)}


def test_max_steps_and_limit_images_make_a_quick_trial(tiny_model, tmp_path):
    captions, images = write_captioned_images(tmp_path, 12, lambda i: [f"resim {i}", f"kedi {i}"],
                                              split=lambda i: "train" if i < 9 else "val")
    out = tmp_path / "out"
    summary = train(TrainConfig(captions=str(captions), images=str(images), output=str(out), model=str(tiny_model),
                                epochs=5, batch_size=2, max_steps=4, limit_images=6, precision="fp32",
                                progress=False))
    assert (summary["steps"], summary["train_images"], summary["val_images"]) == (4, 6, 3)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"][-1] == 4
    assert [r["epoch"] for r in records if r["kind"] == "val"] == [1, 2]  # 3 steps an epoch: the 4th ends epoch 2
    assert (out / "adapter_model.safetensors").is_file() and (out / "curves.png").is_file()


def test_a_trained_road_refuses_to_load_as_the_other_one(tiny_model, tiny_encoder, tmp_path):
    from turkclip.roads import load_clip

    captions, images = write_captioned_images(tmp_path, 4, lambda i: [f"resim {i}"])
    tower = tmp_path / "tower"
    train(TrainConfig(captions=str(captions), images=str(images), output=str(tower), model=str(tiny_model),
                      text_model=str(tiny_encoder), text_train="head", epochs=1, batch_size=2, precision="fp32",
                      progress=False, val_split=None))
    with pytest.raises(TurkclipError, match="is a text tower .* pass it as --text-model"):
        load_clip(str(tiny_model), adapter=str(tower))
