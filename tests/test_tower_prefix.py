"""TowerPrefix: a text tower's top encoder layers on remembered lower-layer states give the full forward's features."""

import pytest
import torch

from turkclip.data.sampling import Item
from turkclip.errors import TurkclipError
from turkclip.roads.tower_prefix import TowerPrefix

CPU = torch.device("cpu")
SENTENCES = ["kırmızı bir araba", "sahilde koşan iki küçük köpek ve bir kedi", "a red car", "two dogs", "a red car"]


def tower(tiny_encoder, mode="full", top=None):
    from turkclip.roads.text_tower import new_text_tower

    t = new_text_tower(str(tiny_encoder), 8)
    t.prepare_training(mode, top=top)
    return t.eval()


@pytest.mark.parametrize("group", [8, 2])  # 2: the batch runs as three length groups, put back in the batch's order
@pytest.mark.parametrize("top", [1, 2])
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_prefix_features_equal_the_full_forward(tiny_encoder, top, mode, group):
    t = tower(tiny_encoder, mode, top)
    if mode == "lora":  # a trained LoRA, not the identity it starts as
        with torch.no_grad():
            for name, p in t.encoder.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    prefix = TowerPrefix(t, top, CPU, "fp32", group=group)
    items = [Item(i, s, "tr") for i, s in enumerate(SENTENCES)]
    with torch.no_grad():
        got = prefix.features(None, **prefix.inputs(items, CPU))
        want = t(**t.tokenize(SENTENCES))
    assert torch.allclose(got, want, atol=1e-5)
    assert len(prefix.memo) == len(set(SENTENCES))  # each distinct sentence's prefix is computed once


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_only_the_top_layers_and_the_head_train_and_get_gradients(tiny_encoder, mode):
    t = tower(tiny_encoder, mode, top=1).train()
    trainable = {name for name, p in t.named_parameters() if p.requires_grad}
    assert "dense.weight" in trainable and any(".layer.1." in n for n in trainable)
    assert not any(".layer.0." in n or "embeddings" in n for n in trainable)
    if mode == "lora":
        assert all("lora_" in n for n in trainable - {"dense.weight", "dense.bias"})
    prefix = TowerPrefix(t, 1, CPU, "fp32")
    prefix.features(None, **prefix.padded(SENTENCES, CPU)).sum().backward()
    assert {name for name, p in t.named_parameters() if p.grad is not None} == trainable


def test_remembered_states_are_made_without_dropout(tiny_encoder):
    t = tower(tiny_encoder).train()  # training mode: dropout would make each computation differ
    first = TowerPrefix(t, 1, CPU, "fp32")
    second = TowerPrefix(t, 1, CPU, "fp32")
    first.remember(SENTENCES)
    second.remember(SENTENCES)
    assert all(torch.equal(first.memo[s], second.memo[s]) for s in SENTENCES)
    assert all(m.training for m in t.encoder.modules())  # and the tower is left as it was
    evaluating = tower(tiny_encoder)
    TowerPrefix(evaluating, 1, CPU, "fp32").remember(SENTENCES)
    assert not any(m.training for m in evaluating.modules())


def test_layers_out_of_range_are_one_line_errors(tiny_encoder):
    with pytest.raises(TurkclipError, match="--text-layers 3: the text model has 2 layers; give 1 to 2"):
        tower(tiny_encoder, top=3)
