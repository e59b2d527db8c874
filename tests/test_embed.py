"""Length-bucketed text features are exactly the padded batch's features, only cheaper."""

import torch

from turkclip.embed import features, text_features
from turkclip.model import load_clip


def test_bucketed_text_features_equal_one_padded_batch(tiny_model):
    clip = load_clip(str(tiny_model))
    clip.model.eval()
    captions = ["bir kedi", "çimlerde koşan kahverengi bir köpek ve yanında top oynayan iki küçük çocuk " * 3,
                "deniz", "karda kayan üç kişi", "kırmızı bir araba", "ağaç"]
    batch = clip.text(captions, "tr")
    assert batch["input_ids"].shape[1] > 40  # one long caption pads every other one
    with torch.no_grad():
        padded = features(clip.model.get_text_features(**batch))
        for buckets in (1, 2, 4, 6, 10):
            assert torch.allclose(text_features(clip.model, **batch, buckets=buckets), padded, atol=1e-5), buckets


def test_bucketed_text_features_carry_gradients(tiny_model):
    clip = load_clip(str(tiny_model))
    batch = clip.text(["bir kedi", "iki köpek parkta koşuyor", "deniz kenarında yürüyen bir adam"], "tr")
    text_features(clip.model, **batch, buckets=2).sum().backward()
    grad = clip.model.text_model.embeddings.token_embedding.weight.grad
    assert grad is not None and grad[batch["input_ids"].unique()].abs().sum() > 0
