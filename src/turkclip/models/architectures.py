"""Named CLIP architectures, for models built from a config with random weights.

No pretrained weights are needed to test or benchmark turkclip: `init_model("ViT-B/32", ...)`
writes a folder with OpenAI ViT-B/32's exact architecture (random weights) that every
command loads like the real thing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPConfig, CLIPModel

from turkclip.data.images import Preprocess
from turkclip.errors import TurkclipError
from turkclip.models.clip import Clip, save_clip
from turkclip.models.hub import NO_REMOTE_CODE, load_failure, offline_kwargs
from turkclip.models.text import TextEncoder


def _config(text: dict, vision: dict, projection_dim: int) -> dict:
    return {"text_config": text, "vision_config": vision, "projection_dim": projection_dim}


ARCHITECTURES = {
    # openai/clip-vit-base-patch32, layer for layer
    "ViT-B/32": _config(
        dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
             max_position_embeddings=77, vocab_size=49408),
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
             image_size=224, patch_size=32),
        512,
    ),
    # a few layers, small images: the offline demo's stand-in for a pretrained CLIP. 16-pixel patches
    # learn the 64-pixel scenes better per CPU second than 8-pixel ones; gelu is faster on CPU than quick_gelu.
    "demo-small": _config(
        dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
             max_position_embeddings=32, hidden_act="gelu"),
        dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
             image_size=64, patch_size=16, hidden_act="gelu"),
        128,
    ),
    # `turkclip demo --quick` (tests): the same idea in seconds
    "demo-tiny": _config(
        dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=32, hidden_act="gelu"),
        dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             image_size=32, patch_size=4, hidden_act="gelu"),
        64,
    ),
    # unit tests
    "tiny": _config(
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
             max_position_embeddings=77),
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
             image_size=32, patch_size=8),
        16,
    ),
}


def init_model(architecture: str, tokenizer: str | Path, folder: str | Path, seed: int = 0) -> Clip:
    """Build `architecture` with random weights around `tokenizer` and save it (with the tokenizer) to `folder`."""
    if architecture not in ARCHITECTURES:
        raise TurkclipError(f"unknown architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise TurkclipError(f"{folder} already exists and is not empty; choose a new or empty folder")
    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer), **NO_REMOTE_CODE, **offline_kwargs(str(tokenizer)))
    except (OSError, ValueError) as e:
        raise TurkclipError(load_failure(str(tokenizer), "tokenizer", e, "--tokenizer")) from None
    spec = ARCHITECTURES[architecture]
    text = dict(spec["text_config"], vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = CLIPConfig(text_config=text, vision_config=spec["vision_config"], projection_dim=spec["projection_dim"])
    torch.manual_seed(seed)
    model = CLIPModel(config)
    clip = Clip(model, TextEncoder(tok, text["max_position_embeddings"]),
                Preprocess(size=spec["vision_config"]["image_size"]), str(folder))
    save_clip(clip, folder)
    return clip
