"""LoRA adapters on a tiny CLIP: where LoRA lands, and that a saved adapter reloads (three ways) and merges."""

import re

import pytest
import torch
from peft import PeftModel
from transformers import CLIPModel

from turkclip.embedding.embed import features
from turkclip.roads import load_clip
from turkclip.roads.adapters import attach_lora, load_adapter
from turkclip.roads.loss import clip_loss
from turkclip.roads.settings import LoraSettings
from turkclip_train.cli import main as cli

CAPTIONS = ["kırmızı elbiseli kız merdiven çıkıyor", "iki köpek çimenlerde koşuyor", "deniz kenarında bir adam",
            "ışıklı bir şehir gecesi"]


def base_model(folder) -> CLIPModel:
    return CLIPModel.from_pretrained(folder, dtype=torch.float32).eval()


def lora_modules(model) -> list[str]:
    return sorted({re.sub(r"\.lora_[AB]\..*", "", n) for n, _ in model.named_parameters() if ".lora_" in n})


@pytest.mark.parametrize("towers", ["text", "vision", "both"])
def test_lora_only_in_chosen_towers_and_q_v(tiny_model, towers):
    model = attach_lora(base_model(tiny_model), LoraSettings(towers=towers))
    modules = lora_modules(model)
    assert modules
    towers_hit = {m.split(".")[2] for m in modules}  # base_model.model.<tower>.encoder...
    expected = {"text": {"text_model"}, "vision": {"vision_model"}, "both": {"text_model", "vision_model"}}[towers]
    assert towers_hit == expected
    assert {m.rsplit(".", 1)[1] for m in modules} == {"q_proj", "v_proj"}
    n_layers = 2  # the tiny architecture: 2 layers per tower
    assert len(modules) == 2 * n_layers * len(expected)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)  # the base is frozen


def test_custom_targets(tiny_model):
    model = attach_lora(base_model(tiny_model), LoraSettings(targets=("k_proj", "out_proj"), towers="text"))
    assert {m.rsplit(".", 1)[1] for m in lora_modules(model)} == {"k_proj", "out_proj"}


def test_trainable_token_rows(tiny_model):
    rows = [320, 1125, 2368]
    model = attach_lora(base_model(tiny_model), LoraSettings(towers="text", token_ids=rows))
    deltas = [(n, p) for n, p in model.named_parameters() if "trainable_tokens" in n and p.requires_grad]
    assert len(deltas) == 1
    name, delta = deltas[0]
    assert "text_model.embeddings.token_embedding" in name
    assert delta.shape == (len(rows), base_model(tiny_model).config.text_config.hidden_size)


# --- a trained adapter: save, reload three ways, merge -------------------------------------------------


def embeddings(model, clip, pixels):
    """(text, image) projected embeddings of fixed inputs, in eval mode."""
    model.eval()
    with torch.no_grad():
        tokens = clip.text(CAPTIONS, "tr")
        text = features(model.get_text_features(**tokens))
        image = features(model.get_image_features(pixel_values=clip.preprocess.normalize(pixels)))
    return text, image


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """LoRA in both towers plus token rows, trained a few steps on random data, saved with save_pretrained."""
    clip = load_clip(str(tiny_model))
    token_rows = sorted(clip.text.token_ids(CAPTIONS[:2], "tr") - set(clip.text.tokenizer.all_special_ids))
    torch.manual_seed(0)
    model = attach_lora(clip.model, LoraSettings(token_ids=token_rows, dropout=0.0))
    pixels = torch.randint(0, 256, (len(CAPTIONS), 3, 32, 32), dtype=torch.uint8)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    tokens = clip.text(CAPTIONS, "tr")
    for _ in range(5):
        text = features(model.get_text_features(**tokens))
        image = features(model.get_image_features(pixel_values=clip.preprocess.normalize(pixels)))
        loss = clip_loss(text, image, model.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    expected = embeddings(model, clip, pixels)
    base = embeddings(base_model(tiny_model), clip, pixels)
    return {"folder": folder, "clip": clip, "pixels": pixels, "expected": expected, "base": base,
            "token_rows": token_rows}


def assert_matches_trained(model, trained):
    text, image = embeddings(model, trained["clip"], trained["pixels"])
    want_text, want_image = trained["expected"]
    torch.testing.assert_close(text, want_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(image, want_image, atol=1e-5, rtol=0)


def test_trained_adapter_differs_from_base(trained):
    (text, image), (base_text, base_image) = trained["expected"], trained["base"]
    assert (text - base_text).abs().max() > 1e-3
    assert (image - base_image).abs().max() > 1e-3
    assert {p.name for p in trained["folder"].iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}


def test_reload_with_transformers_load_adapter(tiny_model, trained):
    model = base_model(tiny_model)
    model.load_adapter(str(trained["folder"]))
    assert_matches_trained(model, trained)


def test_reload_with_peft(tiny_model, trained):
    assert_matches_trained(PeftModel.from_pretrained(base_model(tiny_model), trained["folder"]), trained)


def test_reload_with_turkclip_load_adapter(tiny_model, trained):
    model = load_adapter(base_model(tiny_model), trained["folder"])
    assert_matches_trained(model, trained)
    assert not any(p.requires_grad for p in model.parameters())  # inference by default


def test_merge_gives_a_plain_clip_model(tiny_model, trained, tmp_path):
    out = tmp_path / "merged"
    assert cli(["merge", "--model", str(tiny_model), "--adapter", str(trained["folder"]), "--output", str(out)]) == 0
    merged = base_model(out)
    assert_matches_trained(merged, trained)
    # only the trained token rows of the embedding table moved
    table = merged.text_model.embeddings.token_embedding.weight
    base_table = base_model(tiny_model).text_model.embeddings.token_embedding.weight
    changed = (table != base_table).any(1).nonzero().flatten().tolist()
    assert changed == trained["token_rows"]
    # the merged folder is a complete model: load_clip finds its tokenizer and preprocessing
    clip = load_clip(str(out))
    assert clip.preprocess == trained["clip"].preprocess
