"""Length-bucketed text features are exactly the padded batch's features, only cheaper; the image-bank cache."""

import json
import shutil
import sys
from types import SimpleNamespace

import torch

from turkclip.embedding.embed import cached_image_embeddings, embed_images, features, text_features
from turkclip.roads import load_clip


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


# --- the frozen image tower's cache -------------------------------------------------------------------


def _variant(tiny_model, tmp_path, name: str, **vision) -> str:
    """A copy of the tiny model with the same weights and other vision settings in its config.json."""
    folder = tmp_path / name
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"].update(vision)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _pixels(n: int = 4) -> SimpleNamespace:
    return SimpleNamespace(pixels=torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8,
                                                generator=torch.Generator().manual_seed(0)))


def test_image_bank_cache_is_keyed_by_the_model_config(tiny_model, tmp_path):
    """Same weights, another activation and LayerNorm epsilon: another bank, not the cached one."""
    data, cpu = _pixels(), torch.device("cpu")
    base = load_clip(str(tiny_model))
    other = load_clip(_variant(tiny_model, tmp_path, "other", hidden_act="gelu", layer_norm_eps=1e-2))
    first = cached_image_embeddings(base.model, data, base.preprocess, cpu, "fp32", tmp_path / "cache")
    second = cached_image_embeddings(other.model, data, other.preprocess, cpu, "fp32", tmp_path / "cache")
    other.model.eval()
    fresh = embed_images(other.model, data.pixels, other.preprocess, cpu)
    assert torch.allclose(second, fresh, atol=1e-6) and not torch.allclose(first, second, atol=1e-3)


def test_image_bank_cache_is_keyed_by_library_versions(tiny_model, tmp_path, monkeypatch):
    data, clip, cache_dir = _pixels(), load_clip(str(tiny_model)), tmp_path / "cache"
    cached_image_embeddings(clip.model, data, clip.preprocess, torch.device("cpu"), "fp32", cache_dir)
    # another transformers may compute other numbers (the live module: importing peft re-registers transformers)
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "99.0")
    cached_image_embeddings(clip.model, data, clip.preprocess, torch.device("cpu"), "fp32", cache_dir)
    monkeypatch.setattr(torch, "__version__", "99.0")
    cached_image_embeddings(clip.model, data, clip.preprocess, torch.device("cpu"), "fp32", cache_dir)
    assert len(list(cache_dir.glob("image-embeds-*.npy"))) == 3


def test_image_bank_is_embedded_without_dropout(tiny_model, tmp_path):
    """Training calls it with the model in train mode: the bank must still be the eval-mode embeddings."""
    data = _pixels()
    clip = load_clip(_variant(tiny_model, tmp_path, "dropout", attention_dropout=0.5))
    clip.model.eval()
    expected = embed_images(clip.model, data.pixels, clip.preprocess, torch.device("cpu"))
    clip.model.train()
    bank = cached_image_embeddings(clip.model, data, clip.preprocess, torch.device("cpu"), "fp32", None)
    assert torch.allclose(bank, expected, atol=1e-6)
    assert clip.model.training  # and the model is left as it was
