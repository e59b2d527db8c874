"""Loading a base CLIP: weights, tokenizer and image preprocessing, from a hub id or a folder.

`load_base("openai/clip-vit-base-patch32")` or `load_base("/path/to/folder")` returns a
`Clip`: the `CLIPModel` plus what turns captions and images into its inputs. Failures
(offline hub, a folder that is not a CLIP model) become one-line `TurkclipError`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel
from transformers.utils import logging as hf_logging

from turkclip.data.images import Preprocess
from turkclip.errors import TurkclipError
from turkclip.models.hub import DEFAULT_MODEL, NO_REMOTE_CODE, check_clip_source, load_failure, offline_kwargs
from turkclip.models.processor import folds_turkish, plain_normalizer, save_processor
from turkclip.models.text import TextEncoder

hf_logging.disable_progress_bar()  # "Loading weights" bars for every load drown our own progress bars


@dataclass
class Clip:
    model: CLIPModel  # may be wrapped by PEFT once an adapter is attached
    text: TextEncoder
    preprocess: Preprocess
    name: str  # hub id or folder it came from


def load_base(name: str = DEFAULT_MODEL, tokenizer: str | None = None) -> Clip:
    """Load base weights (fp32), tokenizer and preprocessing settings for `name` (a hub id or a folder).

    The base alone; `turkclip.roads.load_clip` adds a trained road (an adapter or a text tower) on top.
    """
    check_clip_source(name)
    local = offline_kwargs(name)
    try:  # safetensors only: a pickled pytorch_model.bin from a user's folder is never loaded
        model = CLIPModel.from_pretrained(name, dtype=torch.float32, use_safetensors=True, **NO_REMOTE_CODE, **local)
    except (OSError, SafetensorError) as e:
        raise TurkclipError(load_failure(name, "model", e)) from None
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer or name, **NO_REMOTE_CODE, **offline_kwargs(tokenizer or name))
    except (OSError, ValueError) as e:
        raise TurkclipError(load_failure(tokenizer or name, "tokenizer", e) + " (or pass --tokenizer FOLDER)") from None
    if folds_turkish(tok):  # a folder turkclip wrote for CLIPProcessor users; TextEncoder folds per caption language
        tok.backend_tokenizer.normalizer = plain_normalizer()
    try:
        processor = CLIPImageProcessorPil.from_pretrained(name, **NO_REMOTE_CODE, **local)
    except OSError:  # no preprocessor_config.json: CLIP's standard preprocessing at the tower's size
        processor = None
    preprocess = Preprocess.from_processor(processor, model.config.vision_config.image_size)
    text = TextEncoder(tok, max_length=model.config.text_config.max_position_embeddings)
    clip = Clip(model, text, preprocess, name)
    return clip


def save_clip(clip: Clip, folder: str | Path, model: CLIPModel | None = None, lang: str | None = None) -> None:
    """Write a folder that `load_base` (and plain `CLIPModel.from_pretrained` + `CLIPProcessor.from_pretrained`)
    loads; with `lang="tr"` its tokenizer folds case the Turkish way, as turkclip does (see processor.py)."""
    folder = Path(folder)
    (model or clip.model).save_pretrained(folder)
    save_processor(clip, folder, lang)
