"""turkclip: teach CLIP a new language with LoRA adapters — or a swapped pretrained text tower.

The library: data readers, model loading, the two roads to a new language (LoRA adapters on
CLIP's own text tower, or a swapped pretrained text tower), loss, metrics, evaluation,
prediction, and photo search. The command-line tool and the training loop live in `turkclip_train`.

Names are imported on first use (PEP 562): `import turkclip` is instant, and a command that
needs only part of the library (e.g. `turkclip index` with nothing new to embed) does not pay
for transformers and PEFT.
"""

from importlib import import_module

_WHERE = {
    "TurkclipError": "errors",
    # models/: the base CLIP
    "DEFAULT_MODEL": "models.clip", "Clip": "models.clip", "save_clip": "models.clip",
    # roads/: the two roads to a new language
    "load_clip": "roads", "LoraSettings": "roads.settings", "attach_lora": "roads.adapters",
    "load_adapter": "roads.adapters", "SwappedClip": "roads.text_tower", "TextTower": "roads.text_tower",
    "load_text_tower": "roads.text_tower", "new_text_tower": "roads.text_tower", "swap_text_tower": "roads.text_tower",
    "bank_loss": "roads.loss", "clip_loss": "roads.loss", "distill_loss": "roads.loss",
    # data/: captions, images, datasets
    "CaptionSet": "data.captions", "read_captions": "data.captions", "ImageTextSet": "data.dataset",
    "load_image_text_set": "data.dataset", "flip_caption": "data.flip_caption",
    # evaluation/ and search/: using a model
    "evaluate": "evaluation.evaluate", "retrieval_metrics": "evaluation.metrics", "predict": "search.predict",
}
__all__ = sorted(_WHERE)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'turkclip' has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + list(_WHERE))
