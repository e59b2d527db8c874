"""Seed-style inference matches turkclip: the adapter folder (and a merged model) carry a CLIPProcessor
whose tokenizer folds Turkish case as turkclip does, so the Hugging Face recipe from the seed README
(`from_pretrained`, `load_adapter`, `CLIPProcessor(text=..., images=...)`, `logits_per_image.softmax`)
gives `turkclip predict`'s probabilities on captions with İ, I, ı and i. Also: the adapter API of the
pinned transformers/PEFT pair, and the model card."""

from __future__ import annotations

import json
import random

import pytest
import torch
import yaml
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from turkclip.roads import load_clip
from turkclip.roads.adapters import load_adapter
from turkclip.search.predict import predict
from turkclip_train.cli import main

# Every Turkish i: dotted/dotless, upper/lower, and İ written as I + combining dot (NFC makes it İ).
CAPTIONS = ["IŞIKLI bir İstanbul gecesi", "ılık suda yüzen iki İnek", "Irmak kıyısında İki kız", "i̇nce ışık",
            "I\u0307zmir'de\tbir  kedi", "kırmızı elbiseli kız"]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A tiny adapter trained by `turkclip train` on Turkish captions (train + val), and the image it scores."""
    root = tmp_path_factory.mktemp("parity")
    images = root / "images"
    images.mkdir()
    gen = torch.Generator().manual_seed(0)
    rows = ["image,caption,split"]
    for i in range(12):
        pixels = torch.randint(0, 256, (36 + i, 44, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(images / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{CAPTIONS[i % len(CAPTIONS)]} {i},{'train' if i < 8 else 'val'}")
    captions = root / "captions.csv"
    captions.write_text("\n".join(rows) + "\n", encoding="utf-8")
    adapter = root / "adapter"
    assert main(["train", "--model", str(tiny_model), "--captions", str(captions), "--images", str(images),
                 "--output", str(adapter), "--epochs", "2", "--batch-size", "4", "--lr", "1e-2", "--lora-r", "4",
                 "--lora-dropout", "0", "--precision", "fp32", "--cache-dir", "none", "--no-progress"]) == 0
    return {"adapter": adapter, "image": images / "03.png", "captions": captions, "root": root}


def seed_readme_probs(base, adapter, image, captions) -> torch.Tensor:
    """The seed README's usage example, as a user runs it."""
    model = CLIPModel.from_pretrained(str(base))
    if adapter is not None:
        model.load_adapter(str(adapter))
    processor = CLIPProcessor.from_pretrained(str(adapter if adapter is not None else base))
    inputs = processor(text=captions, images=Image.open(image), return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**inputs).logits_per_image.softmax(dim=1)[0]


def turkclip_probs(base, adapter, image, captions) -> torch.Tensor:
    """What `turkclip predict --model base --adapter adapter image captions...` computes."""
    clip = load_clip(str(base))
    if adapter is not None:
        clip.model = load_adapter(clip.model, adapter)
    return torch.tensor(predict(clip, image, captions))


@pytest.mark.filterwarnings("error::UserWarning")  # and quietly: no "max_length is ignored" on every call
def test_seed_readme_example_matches_turkclip_predict(tiny_model, trained):
    want = turkclip_probs(tiny_model, trained["adapter"], trained["image"], CAPTIONS)
    got = seed_readme_probs(tiny_model, trained["adapter"], trained["image"], CAPTIONS)
    assert (want - turkclip_probs(tiny_model, None, trained["image"], CAPTIONS)).abs().max() > 1e-4  # adapter counts
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_processor_tokenizes_exactly_like_turkclip(tiny_model, trained):
    clip = load_clip(str(tiny_model))
    processor = CLIPProcessor.from_pretrained(str(trained["adapter"]))
    rng = random.Random(0)
    alphabet = list("IİıiÇçĞğÖöŞşÜüAaZz0123456789.,'!- ") + ["\u0307", "\t", "\n", "\x1c", "\u00a0", "\u3000", "  "]
    texts = CAPTIONS + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(300)]
    want = clip.text(texts, "tr")
    got = processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.equal(got["attention_mask"], want["attention_mask"])
    # CLIP's own tokenizer, as the seed used it, does not: I/İ become i and i + a combining dot
    plain = CLIPProcessor.from_pretrained(str(tiny_model)).tokenizer(CAPTIONS[:1])["input_ids"][0]
    assert plain != want["input_ids"][0][: len(plain)].tolist()


def test_merged_model_matches_with_plain_from_pretrained(tiny_model, trained, capsys):
    merged = trained["root"] / "merged"
    assert main(["merge", "--model", str(tiny_model), "--adapter", str(trained["adapter"]), "--output", str(merged)]) == 0
    want = turkclip_probs(tiny_model, trained["adapter"], trained["image"], CAPTIONS)
    torch.testing.assert_close(seed_readme_probs(merged, None, trained["image"], CAPTIONS), want, atol=1e-5, rtol=0)
    # turkclip reading the merged folder folds case per caption language: English "I" stays i, not ı
    clip = load_clip(str(merged))
    english = ["In the park", "Ice on a lake"]
    assert torch.equal(clip.text(english, "en")["input_ids"], load_clip(str(tiny_model)).text(english, "en")["input_ids"])
    torch.testing.assert_close(turkclip_probs(merged, None, trained["image"], CAPTIONS), want, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")  # a second adapter, on purpose
def test_adapter_api_of_the_pinned_transformers_peft_pair(tiny_model, trained):
    """load_adapter, active_adapters, disable/enable_adapters and set_adapter on a trained adapter."""
    clip = load_clip(str(tiny_model))
    tokens = clip.text(CAPTIONS, "tr")

    def text_features(model):
        with torch.no_grad():
            out = model.get_text_features(**tokens)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    model = CLIPModel.from_pretrained(str(tiny_model)).eval()
    base = text_features(model)
    model.load_adapter(str(trained["adapter"]), adapter_name="tr")
    adapted = text_features(model)
    assert (adapted - base).abs().max() > 1e-4
    assert model.active_adapters() == ["tr"]
    model.disable_adapters()
    torch.testing.assert_close(text_features(model), base, atol=1e-6, rtol=0)
    model.enable_adapters()
    torch.testing.assert_close(text_features(model), adapted, atol=1e-6, rtol=0)
    model.load_adapter(str(trained["adapter"]), adapter_name="second")
    model.set_adapter("second")
    assert model.active_adapters() == ["second"]
    model.set_adapter("tr")
    torch.testing.assert_close(text_features(model), adapted, atol=1e-6, rtol=0)


def test_adapter_folder_has_a_model_card(tiny_model, trained):
    from huggingface_hub import ModelCard

    text = (trained["adapter"] / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---")[1])
    assert front["base_model"] == str(tiny_model)
    assert front["library_name"] == "peft" and front["language"] == "tr"
    assert front["datasets"] == ["captions"] and {"clip", "lora", "peft"} <= set(front["tags"])
    records = [json.loads(line) for line in (trained["adapter"] / "metrics.jsonl").read_text().splitlines()]
    best = max((r for r in records if r["kind"] == "val"), key=lambda r: r["mean_recall"])
    card = ModelCard.load(trained["adapter"] / "README.md")  # the Hub's own parser reads the results
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results["Turkish text→image R@1"] == round(best["text_to_image"]["R@1"], 2)
    assert results["mean recall"] == round(best["mean_recall"], 2)
    assert "CLIPProcessor.from_pretrained(adapter)" in text and "load_adapter" in text
    assert "peft" in text.lower() and "[More Information Needed]" not in text  # not PEFT's boilerplate


def test_training_state_is_not_in_the_shipped_folder(trained):
    shipped = {p.name for p in trained["adapter"].iterdir()}
    assert "checkpoint.pt" not in shipped and (trained["adapter"] / "checkpoint" / "checkpoint.pt").is_file()
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "processor_config.json",
            "README.md"} <= shipped
