"""A text tower on disk: a sentence-transformers model folder, written and read without sentence-transformers.

The layout is that of sentence-transformers' `clip-ViT-B-32-multilingual-v1`:

    modules.json                        Transformer (this folder) → 1_Pooling (mean) → 2_Dense
    config.json, model.safetensors      the encoder (any LoRA merged in), as transformers saves it
    tokenizer files, sentence_bert_config.json (max_seq_length)
    config_sentence_transformers.json   the default prompt ("query: " for e5)
    1_Pooling/config.json, 2_Dense/{config.json, model.safetensors}
    turkclip_text_tower.json            which base CLIP's image space the tower is aligned to

so `SentenceTransformer(folder).encode(captions)` gives vectors comparable with the base's
`CLIPModel.get_image_features`, and turkclip reads the same folder back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from turkclip.errors import TurkclipError
from turkclip.models.hub import NO_REMOTE_CODE, load_failure, offline_kwargs, refuse_remote_code

ALIGNMENT_FILE = "turkclip_text_tower.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                   "tokenizer.model")
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
]


def is_tower(name: str | Path) -> bool:
    return (Path(name) / ALIGNMENT_FILE).is_file()


def default_prompt(name: str | Path) -> str:
    """e5 models expect "query: " before every query; other encoders take the text as it is."""
    e5 = (Path(name) / "turkclip_e5.json").is_file() or "e5" in Path(str(name)).name.lower()
    return "query: " if e5 else ""


def load_encoder(name: str | Path) -> tuple[nn.Module, object]:
    """A transformers text encoder and its tokenizer, from a hub id or folder, with one-line errors."""
    name = str(name)
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1
    if not path.exists() and looks_like_path:
        raise TurkclipError(f"text model folder not found: {name}")
    if path.exists() and not (path / "config.json").is_file():
        raise TurkclipError(f"{name} is not a text encoder folder: it has no config.json")
    refuse_remote_code(name, "--text-model")
    local = offline_kwargs(name)  # an unreachable hub: read the local cache only, no minute of retries
    try:
        config = AutoConfig.from_pretrained(name, **NO_REMOTE_CODE, **local)
    except (OSError, ValueError) as e:
        raise TurkclipError(load_failure(name, "text model", e, flag="--text-model")) from None
    if config.model_type == "clip":
        raise TurkclipError(f"{name} is a CLIP model; --text-model takes a text encoder (BERT, DistilBERT, XLM-R, e5…)"
                            " and --model the base CLIP")
    if getattr(config, "vocab_size", None) is None or getattr(config, "hidden_size", None) is None:
        raise TurkclipError(f"{name} is not a text encoder: its config ({config.model_type}) has no vocabulary")
    if path.exists() and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise TurkclipError(f"{name} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); copy the encoder's"
                            " tokenizer files into it")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **NO_REMOTE_CODE, **local)
    except (OSError, ValueError, TypeError) as e:
        raise TurkclipError(load_failure(name, "tokenizer", e, flag="--text-model")
                            + " (a text model folder needs its tokenizer files)") from None
    if tokenizer is None or len(tokenizer) < 100:  # transformers 5 builds an empty one rather than failing
        raise TurkclipError(f"{name} has no usable tokenizer (tokenizer.json or a vocabulary file)")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # an unused pooler that is not in the checkpoint is not worth a warning
    try:
        encoder = AutoModel.from_pretrained(name, dtype=torch.float32, use_safetensors=True, **NO_REMOTE_CODE, **local)
    except (OSError, ValueError, SafetensorError) as e:
        raise TurkclipError(load_failure(name, "text model", e, flag="--text-model")) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return encoder, tokenizer


def save(folder: str | Path, encoder: nn.Module, tokenizer, dense: nn.Linear, prompt: str, max_length: int,
         alignment: dict) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _write(folder / "modules.json", MODULES)
    _write(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    _write(folder / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": "3.0.0", "pytorch": torch.__version__},
        "prompts": {"query": prompt} if prompt else {}, "default_prompt_name": "query" if prompt else None,
        "similarity_fn_name": "cosine"})
    _write(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dense.in_features, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True})
    _write(folder / "2_Dense" / "config.json", {
        "in_features": dense.in_features, "out_features": dense.out_features, "bias": dense.bias is not None,
        "activation_function": "torch.nn.modules.linear.Identity"})
    weights = {"linear.weight": dense.weight.detach().float().cpu().contiguous()}
    if dense.bias is not None:
        weights["linear.bias"] = dense.bias.detach().float().cpu().contiguous()
    save_file(weights, folder / "2_Dense" / "model.safetensors")
    _write(folder / ALIGNMENT_FILE, {"format": 1, "prompt": prompt, **alignment})


def load(folder: str | Path):
    """(encoder, tokenizer, dense, prompt, max_length, alignment) of a tower folder `save` wrote."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TurkclipError(f"text tower folder not found: {folder}")
    if (folder / "adapter_config.json").is_file():
        raise TurkclipError(f"{folder} is a LoRA adapter (the other road), not a text tower: pass it as --adapter")
    if not is_tower(folder):
        raise TurkclipError(f"{folder} is not a text tower trained by turkclip: it has no {ALIGNMENT_FILE}"
                            " (to train one from a text encoder: turkclip train --text-model ENCODER)")
    alignment = json.loads((folder / ALIGNMENT_FILE).read_text(encoding="utf-8"))
    encoder, tokenizer = load_encoder(folder)
    dense_config = json.loads((folder / "2_Dense" / "config.json").read_text(encoding="utf-8"))
    try:
        weights = load_file(folder / "2_Dense" / "model.safetensors")
    except (OSError, SafetensorError) as e:
        raise TurkclipError(f"cannot read {folder / '2_Dense' / 'model.safetensors'}: {e}") from None
    dense = nn.Linear(dense_config["in_features"], dense_config["out_features"], bias=dense_config.get("bias", True))
    dense.load_state_dict({k.removeprefix("linear."): v for k, v in weights.items()})
    max_length = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"]
    return encoder, tokenizer, dense, alignment.get("prompt", ""), max_length, alignment


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
