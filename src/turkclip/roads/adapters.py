"""LoRA adapters with PEFT: attach, save, load (validated), merge.

An adapter folder is exactly what PEFT writes with `save_pretrained`
(`adapter_config.json` + `adapter_model.safetensors`), so both
`CLIPModel.from_pretrained(base).load_adapter(folder)` and
`PeftModel.from_pretrained(base, folder)` load it. Besides LoRA on attention
projections it can carry trained rows of the token-embedding table
(`trainable_token_indices`): the embeddings of word pieces the base model never
learnt, which attention-only LoRA cannot repair (see README, "Why train token rows").
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from peft import PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from transformers import CLIPModel

from turkclip.errors import TurkclipError
from turkclip.roads.sentence_folder import is_tower
from turkclip.roads.settings import LoraSettings

# peft reads transformers 5's deprecated `is_gradient_checkpointing`: noise on every run, nothing the user can fix.
_PEFT_NOISE = "`is_gradient_checkpointing` is deprecated"



def attach_lora(model: CLIPModel, settings: LoraSettings) -> PeftModel:
    """Freeze `model` and wrap it with fresh LoRA (and token-row) parameters."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PEFT_NOISE, category=FutureWarning)
        peft_model = get_peft_model(model, settings.peft_config(model.config.text_config.num_hidden_layers))
    if not any(p.requires_grad for p in peft_model.parameters()):
        raise TurkclipError(f"no module matched the LoRA targets {settings.targets} in the {settings.towers} tower(s)")
    return peft_model


def load_adapter(model: CLIPModel, folder: str | Path, trainable: bool = False) -> PeftModel:
    """Wrap `model` with the adapter in `folder`, refusing anything but a safetensors PEFT adapter."""
    folder = Path(folder)
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        if is_tower(folder):
            raise TurkclipError(f"{folder} is a text tower (the other road, a sentence-transformers folder), not a LoRA"
                                " adapter: pass it as --text-model")
        raise TurkclipError(f"{folder} is not an adapter folder: it has no adapter_config.json")
    if not (folder / "adapter_model.safetensors").is_file():
        raise TurkclipError(
            f"{folder} has no adapter_model.safetensors; turkclip loads weights only from safetensors"
            " (never pickled .bin files)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TurkclipError(f"{config_path} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise TurkclipError(f'{config_path} is not a PEFT adapter config: it has no "peft_type"')
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_PEFT_NOISE, category=FutureWarning)
            warnings.filterwarnings("ignore", message="Found missing adapter keys")  # checked below, as an error
            peft_model = PeftModel.from_pretrained(model, folder, is_trainable=trainable)
    except RuntimeError as e:
        if "size mismatch" in str(e):
            raise TurkclipError(
                f"adapter {folder} was trained for a different base model (tensor shapes differ); pass the --model it was"
                f" trained on (its adapter_config.json says {_base_of(config_path)!r})"
            ) from None
        raise
    except (ValueError, TypeError, KeyError, SafetensorError) as e:
        raise TurkclipError(f"{folder} is not a usable adapter: {str(e).splitlines()[0]}") from None
    # Same shapes but other layers (e.g. a deeper base): PEFT would silently drop or zero-fill tensors.
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        saved = set(f.keys())
    if saved != set(get_peft_model_state_dict(peft_model)):
        raise TurkclipError(
            f"adapter {folder} was trained for a different base model (its layers differ); pass the --model it was"
            f" trained on (its adapter_config.json says {_base_of(config_path)!r})"
        )
    return peft_model


def _base_of(config_path: Path) -> str | None:
    return json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
