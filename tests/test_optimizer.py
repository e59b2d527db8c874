"""CLIP's optimizer rules: no weight decay on biases, norms and the logit scale; the scale capped at ln 100."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from turkclip.models.clip import save_clip
from turkclip.roads import load_clip
from turkclip.roads.optimizer import MAX_LOGIT_SCALE, param_groups
from turkclip_train.config import TrainConfig
from turkclip_train.train import train


def test_weight_decay_shrinks_matrices_only(tiny_model):
    """One AdamW step with zero gradients is pure decay: matrices shrink, biases, LayerNorms and the scale do not."""
    model = load_clip(str(tiny_model)).model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(param_groups(model.named_parameters(), weight_decay=0.5), lr=1.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = dict(model.named_parameters())
    for name, old in before.items():
        exempt = old.ndim < 2 or name == "logit_scale"
        expected = old if exempt else old * 0.5
        assert torch.allclose(after[name].detach(), expected), name
    names = set(before)
    assert "logit_scale" in names and any("layer_norm" in n and n.endswith(".weight") for n in names)
    assert any(n.endswith(".bias") for n in names)


def test_param_groups_of_a_lora_run_keep_one_group():
    """LoRA trains matrices only: one group, so checkpoints of earlier runs still load."""
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    assert [len(g["params"]) for g in param_groups(model.named_parameters(), 0.1)] == [1]


def test_full_training_caps_the_logit_scale_at_ln_100(tiny_model, tmp_path):
    clip = load_clip(str(tiny_model))
    with torch.no_grad():
        clip.model.logit_scale.fill_(5.0)  # temperature 148: above CLIP's cap of 100
    save_clip(clip, tmp_path / "hot")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,caption"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
        rows.append(f"{i}.jpg,bir şey {i}")
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(captions=str(tmp_path / "c.csv"), images=str(images), output=str(tmp_path / "run"),
                          model=str(tmp_path / "hot"), road="full", epochs=1, batch_size=3, lr=1e-4, precision="fp32",
                          train_split="all", val_split=None,
                          cache_dir=None, progress=False))
    finally:
        torch.set_num_threads(threads)
    scale = load_clip(str(tmp_path / "run")).model.logit_scale.item()
    assert scale <= MAX_LOGIT_SCALE + 1e-6 and MAX_LOGIT_SCALE == math.log(100)
