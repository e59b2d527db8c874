"""The adapter folder's README.md: a Hugging Face model card.

YAML front matter the Hub reads (`base_model`, `library_name: peft`, `language`, `datasets`,
`tags`, `pipeline_tag`, and the validation results as `model-index`), then a short page: what the
adapter is, how it was trained, its validation numbers, and how to use it. It replaces the
boilerplate card PEFT's `save_pretrained` writes.
"""

from __future__ import annotations

import json
from pathlib import Path

TAGS = ["clip", "lora", "peft", "turkclip", "zero-shot-image-classification", "image-text-retrieval"]
DIRECTIONS = {"text_to_image": "text→image", "image_to_text": "image→text"}
LANGUAGE_NAMES = {"tr": "Turkish", "en": "English"}


def _q(value) -> str:
    """A YAML scalar (JSON is YAML): strings quoted and escaped, numbers as they are."""
    return json.dumps(value, ensure_ascii=False)


def best_validation(records: list[dict]) -> dict | None:
    """The validation record of the epoch whose adapter was kept (highest mean recall, first on ties)."""
    val = [r for r in records if r.get("kind") == "val"]
    return max(val, key=lambda r: r["mean_recall"]) if val else None


def model_card(base_model: str, lang: str = "tr", datasets: list[str] = (), metrics: dict | None = None,
               settings: dict | None = None, name: str = "adapter") -> str:
    """The card's text. `metrics`: a validation record (`evaluate`'s result, plus "epoch");
    `settings`: training settings worth stating (LoRA rank, towers, epochs, ...)."""
    language = LANGUAGE_NAMES.get(lang, lang)
    title = Path(name).name or name  # the folder's own name, not where it happened to be written
    front = ["---", f"base_model: {_q(base_model)}", "library_name: peft", f"language: {_q(lang)}",
             "pipeline_tag: zero-shot-image-classification"]
    if datasets:
        front += ["datasets:"] + [f"- {_q(d)}" for d in datasets]
    front += ["tags:"] + [f"- {t}" for t in TAGS]
    if metrics:
        front += ["model-index:", f"- name: {_q(title)}", "  results:", "  - task:", "      type: image-text-retrieval",
                  "      name: Image-text retrieval (full gallery)", "    dataset:",
                  f"      name: {_q(datasets[0] if datasets else 'validation captions')}",
                  f"      type: {_q(datasets[0] if datasets else 'custom')}", "      split: validation", "    metrics:"]
        for key, label in DIRECTIONS.items():
            for k in ("R@1", "R@5", "R@10"):
                front += [f"    - type: recall_at_{k[2:]}", f"      name: {_q(f'{language} {label} {k}')}",
                          f"      value: {metrics[key][k]:.2f}"]
        front += ["    - type: mean_recall", "      name: mean recall", f"      value: {metrics['mean_recall']:.2f}"]
    front.append("---")

    body = [f"# {title}: {language} LoRA adapter for {base_model}", "",
            f"A LoRA adapter (PEFT) that teaches the CLIP model `{base_model}` {language} captions, trained with"
            " turkclip (`turkclip train`). The folder also holds the `CLIPProcessor` files"
            " (image preprocessing and tokenizer) that match training" + (
                ": its tokenizer folds case the Turkish way (`I` → `ı`, `İ` → `i`) before CLIP's BPE, as"
                " turkclip does." if lang == "tr" else "."), ""]
    if settings:
        body += ["## Training", "", "| setting | value |", "|---|---|"]
        body += [f"| {k} | {v} |" for k, v in settings.items()] + [""]
    if metrics:
        body += ["## Validation", "",
                 f"Full-gallery retrieval on the validation split ({metrics['n_images']} images, {metrics['n_texts']}"
                 f" captions), epoch {metrics.get('epoch', '?')} (the adapter kept in this folder), R@k in %:", "",
                 "| direction | R@1 | R@5 | R@10 | median rank |", "|---|---:|---:|---:|---:|"]
        body += [f"| {label} | {metrics[key]['R@1']:.2f} | {metrics[key]['R@5']:.2f} | {metrics[key]['R@10']:.2f} |"
                 f" {metrics[key]['median_rank']:.1f} |" for key, label in DIRECTIONS.items()]
        body += ["", f"Mean recall {metrics['mean_recall']:.2f}.", ""]
    example, other = (("çimlerde koşan bir köpek", "karda oynayan iki çocuk") if lang == "tr"
                      else ("a dog running on the grass", "two children playing in the snow"))
    body += ["## Usage", "", "```python", "from PIL import Image", "from transformers import CLIPModel, CLIPProcessor", "",
             f"adapter = {_q(name)}  # this folder (or its hub id once uploaded)",
             f"model = CLIPModel.from_pretrained({_q(base_model)})",
             "model.load_adapter(adapter)",
             "processor = CLIPProcessor.from_pretrained(adapter)",
             f"inputs = processor(text=[{_q(example)}, {_q(other)}],",
             '                   images=Image.open("photo.jpg"), return_tensors="pt", padding=True)',
             "probs = model(**inputs).logits_per_image.softmax(dim=1)", "```", "",
             "Or with the command line, which gives the same probabilities:", "", "```bash",
             f'turkclip predict --model {base_model} --adapter {name} photo.jpg "{example}"', "```", ""]
    return "\n".join(front + [""] + body)


def write_model_card(folder: str | Path, **card) -> Path:
    """Write `model_card(**card)` as `folder`/README.md (replacing PEFT's boilerplate); returns its path."""
    path = Path(folder) / "README.md"
    path.write_text(model_card(**card), encoding="utf-8")
    return path
