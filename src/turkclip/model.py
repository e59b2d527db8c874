"""Loading a base CLIP: weights, tokenizer and image preprocessing, from a hub id or a folder.

`load_clip("openai/clip-vit-base-patch32")` or `load_clip("/path/to/folder")` returns a
`Clip`: the `CLIPModel` plus what turns captions and images into its inputs. Failures
(offline hub, a folder that is not a CLIP model) become one-line `TurkclipError`s.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel
from transformers.utils import logging as hf_logging

from .data.images import Preprocess
from .errors import TurkclipError
from .processor import folds_turkish, plain_normalizer, save_processor
from .text import TextEncoder

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

hf_logging.disable_progress_bar()  # "Loading weights" bars for every load drown our own progress bars


@dataclass
class Clip:
    model: CLIPModel  # may be wrapped by PEFT once an adapter is attached
    text: TextEncoder
    preprocess: Preprocess
    name: str  # hub id or folder it came from


def load_clip(name: str = DEFAULT_MODEL, tokenizer: str | None = None, text_model: str | None = None,
              adapter: str | None = None) -> Clip:
    """Load base weights (fp32), tokenizer and preprocessing settings for `name`.

    The two roads to a new language, one at a time: `adapter`, a LoRA adapter folder (`turkclip train`),
    or `text_model`, a text tower folder written by `turkclip train --text-model` (aligned to this base):
    captions then go through it instead of CLIP's own text tower.
    """
    if adapter and text_model:
        raise TurkclipError("give --adapter or --text-model, not both (two roads to the same goal)")
    _check_source(name)
    local = offline_kwargs(name)
    try:  # safetensors only: a pickled pytorch_model.bin from a user's folder is never loaded
        model = CLIPModel.from_pretrained(name, dtype=torch.float32, use_safetensors=True, **local)
    except (OSError, SafetensorError) as e:
        raise TurkclipError(load_failure(name, "model", e)) from None
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer or name, **offline_kwargs(tokenizer or name))
    except (OSError, ValueError) as e:
        raise TurkclipError(load_failure(tokenizer or name, "tokenizer", e) + " (or pass --tokenizer FOLDER)") from None
    if folds_turkish(tok):  # a folder turkclip wrote for CLIPProcessor users; TextEncoder folds per caption language
        tok.backend_tokenizer.normalizer = plain_normalizer()
    try:
        processor = CLIPImageProcessorPil.from_pretrained(name, **local)
    except OSError:  # no preprocessor_config.json: CLIP's standard preprocessing at the tower's size
        processor = None
    preprocess = Preprocess.from_processor(processor, model.config.vision_config.image_size)
    text = TextEncoder(tok, max_length=model.config.text_config.max_position_embeddings)
    clip = Clip(model, text, preprocess, name)
    if text_model:
        from .text_tower import load_text_tower, swap_text_tower

        tower, alignment = load_text_tower(text_model)
        clip = swap_text_tower(clip, tower, alignment, source=text_model)
    if adapter:
        from .adapters import load_adapter

        clip.model = load_adapter(clip.model, adapter)
    return clip


def save_clip(clip: Clip, folder: str | Path, model: CLIPModel | None = None, lang: str | None = None) -> None:
    """Write a folder that `load_clip` (and plain `CLIPModel.from_pretrained` + `CLIPProcessor.from_pretrained`)
    loads; with `lang="tr"` its tokenizer folds case the Turkish way, as turkclip does (see processor.py)."""
    folder = Path(folder)
    (model or clip.model).save_pretrained(folder)
    save_processor(clip, folder, lang)


def offline_kwargs(name: str) -> dict:
    """`from_pretrained` keywords for `name`: read the local Hugging Face cache only when `name` is a hub id and
    the hub is unreachable, instead of a minute of retries and warnings before the same failure."""
    if Path(name).expanduser().exists() or hub_reachable():
        return {}
    return {"local_files_only": True}


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (any HTTP status), asked once per process."""
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # DNS failure, refused, timed out, proxy error...
        return False
    return True


def _check_source(name: str) -> None:
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1  # hub ids are "org/name"
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TurkclipError(f"{name} is not a model folder: it has no config.json")
        try:
            model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (ValueError, AttributeError):
            return  # transformers explains a malformed config.json itself
        if model_type != "clip":
            raise TurkclipError(f"{name} is not a CLIP model: its config.json says model_type {model_type!r}")
    elif looks_like_path:
        raise TurkclipError(f"model folder not found: {name}")


def load_failure(name: str, what: str, error: Exception, flag: str = "--model") -> str:
    """One line saying why `name` (a folder or hub id) could not be loaded, and what to do."""
    if Path(name).expanduser().exists():
        return f"could not load the {what} from {name}: {str(error).splitlines()[0]}"
    return (
        f"could not load {what} {name!r}: it is not a local folder and the Hugging Face hub is unreachable"
        f" (or the id is wrong). On a connected machine run `hf download {name} --local-dir DIR`,"
        f" copy DIR here and pass {flag} DIR"
    )
