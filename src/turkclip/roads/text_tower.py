"""The second road to Turkish: CLIP's text tower swapped for a pretrained multilingual encoder.

A `TextTower` is any transformers text encoder (BERT, DistilBERT, XLM-R, e5 …) + mean pooling
+ a linear projection into the base CLIP's embedding space — the layout of sentence-transformers'
`clip-ViT-B-32-multilingual-v1` and of M-CLIP. `SwappedClip` pairs it with the frozen base CLIP:
images go through CLIP's image tower, captions through the new tower. It answers the same calls
as a `CLIPModel` (`get_text_features`, `get_image_features`, `logit_scale`), so training,
evaluation, prediction and search use it without knowing which road they are on.

How much of the tower trains is `--text-train`:
- head: the encoder is frozen; only the projection trains, on pooled features that are computed
  once per caption and remembered (the encoder runs once per distinct caption, not per step);
- lora: PEFT LoRA on the encoder's attention projections (targets per architecture);
- full: every weight.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from turkclip.errors import TurkclipError
from turkclip.roads import sentence_folder
from turkclip.roads.settings import LoraSettings

TRAIN_MODES = ("head", "lora", "full")
MAX_LENGTH = 128  # tokens per caption: captions are short; sentence-transformers truncates at the same place

# Attention projections that LoRA adapts, by the encoder's config.model_type.
LORA_TARGETS = {
    "bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
    "camembert": ["query", "value"], "electra": ["query", "value"], "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"], "mpnet": ["q", "v"],
}


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors that are not padding (sentence-transformers' "mean" pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class TextTower(nn.Module):
    """Encoder → mean pooling → linear projection into CLIP's embedding space."""

    def __init__(self, encoder: nn.Module, tokenizer, dense: nn.Linear, prompt: str = "", max_length: int = MAX_LENGTH):
        super().__init__()
        self.encoder, self.dense = encoder, dense
        self.tokenizer, self.prompt, self.max_length = tokenizer, prompt, max_length
        self.frozen_encoder = False  # --text-train head: pooled features are remembered per caption
        self._pooled_memo: dict[bytes, torch.Tensor] = {}

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Exactly what sentence-transformers does with the folder's default prompt: prompt + raw text."""
        batch = self.tokenizer([self.prompt + t for t in texts], padding="longest", truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.frozen_encoder:
            return self.dense(self._remembered_pooled(input_ids, attention_mask))
        return self.dense(self.pooled(input_ids, attention_mask))

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled encoder output: what the projection maps into CLIP's space."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    @torch.no_grad()
    def _remembered_pooled(self, input_ids, attention_mask):
        """Pooled features of the frozen encoder: each distinct caption is encoded once, then looked up."""
        keys = [ids[: int(n)].cpu().numpy().tobytes() for ids, n in zip(input_ids, attention_mask.sum(1))]
        missing, seen = [], set()
        for i, key in enumerate(keys):
            if key not in self._pooled_memo and key not in seen:
                seen.add(key)
                missing.append(i)
        if missing:
            for i, vec in zip(missing, self.pooled(input_ids[missing], attention_mask[missing]).float()):
                self._pooled_memo[keys[i]] = vec
        return torch.stack([self._pooled_memo[k] for k in keys])

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_encoder:
            self.encoder.eval()  # a frozen encoder never runs dropout: its remembered features stay valid
        return self

    def prepare_training(self, mode: str, lora: LoraSettings | None = None, top: int | None = None) -> None:
        """Decide what trains: the projection only, LoRA on the encoder's attention, or everything; with `top`, of the
        encoder only its top `top` layers (LoRA in them, or every weight of them)."""
        if mode not in TRAIN_MODES:
            raise TurkclipError(f"--text-train must be one of {', '.join(TRAIN_MODES)}, not {mode!r}")
        layers = None
        if top is not None:
            check_layers(self.encoder, top)
            depth = len(encoder_layers(self.encoder))
            layers = range(depth - top, depth)
        self.encoder.requires_grad_(mode == "full" and layers is None)
        if mode == "full" and layers is not None:
            for i in layers:
                encoder_layers(self.encoder)[i].requires_grad_(True)
        self.dense.requires_grad_(True)
        self.frozen_encoder = mode == "head"
        self._pooled_memo.clear()
        if mode == "lora":
            self.encoder = attach_encoder_lora(self.encoder, lora or LoraSettings(), layers)

    def merged_encoder(self) -> nn.Module:
        """The encoder with any LoRA folded in (a copy: training can go on with the original)."""
        if hasattr(self.encoder, "merge_and_unload"):
            return copy.deepcopy(self.encoder).merge_and_unload()
        return self.encoder


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a (possibly PEFT-wrapped) BERT-family encoder (BERT, e5, RoBERTa, XLM-R, ELECTRA,
    CamemBERT: an `embeddings` module and `encoder.layer` blocks)."""
    base = encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(base, "embeddings"):
        raise TurkclipError(f"--text-layers needs a BERT-style encoder (bert, e5, roberta, xlm-roberta, electra,"
                            f" camembert), not {getattr(base.config, 'model_type', '?')!r}; leave --text-layers out")
    return layers


def check_layers(encoder: nn.Module, top: int) -> None:
    n = len(encoder_layers(encoder))
    if not 1 <= top <= n:
        raise TurkclipError(f"--text-layers {top}: the text model has {n} layers; give 1 to {n}")


def attach_encoder_lora(encoder: nn.Module, settings: LoraSettings, layers: range | None = None) -> nn.Module:
    """PEFT LoRA on the encoder's attention projections: in every layer, or in the layers numbered `layers`."""
    from peft import LoraConfig, get_peft_model

    model_type = getattr(encoder.config, "model_type", "?")
    if model_type not in LORA_TARGETS:
        raise TurkclipError(f"no LoRA targets known for text encoders of type {model_type!r} (known: "
                            f"{', '.join(sorted(LORA_TARGETS))}); use --text-train head or full")
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=LORA_TARGETS[model_type], layers_to_transform=list(layers) if layers else None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return get_peft_model(encoder, config)


class TowerText:
    """The tokenizer side of a `TextTower`, shaped like `turkclip.models.text.TextEncoder` (what the loop calls).

    No Turkish case folding: the tower's own tokenizer was trained on cased multilingual text.
    """

    def __init__(self, tower: TextTower):
        self.tower = tower
        self.tokenizer = tower.tokenizer
        self.max_length = tower.max_length

    def __call__(self, texts: list[str], langs: list[str] | str = "tr") -> dict[str, torch.Tensor]:
        return self.tower.tokenize(list(texts))


class SwappedClip(nn.Module):
    """A frozen base CLIP whose captions go through `tower`; answers like a `CLIPModel`."""

    def __init__(self, clip_model: nn.Module, tower: TextTower, base_name: str, logit_scale: float | None = None):
        super().__init__()
        clip_model.requires_grad_(False)
        self.clip, self.tower, self.base_name = clip_model, tower, base_name
        init = clip_model.logit_scale.item() if logit_scale is None else logit_scale
        self.logit_scale = nn.Parameter(torch.tensor(float(init)))

    @property
    def config(self):
        return self.clip.config

    @property
    def vision_model(self):
        return self.clip.vision_model

    @property
    def visual_projection(self):
        return self.clip.visual_projection

    def get_image_features(self, pixel_values: torch.Tensor):
        return self.clip.get_image_features(pixel_values=pixel_values)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.tower(input_ids, attention_mask)

    def save_pretrained(self, folder: str | Path) -> None:
        """A sentence-transformers folder (encoder with LoRA merged, pooling, projection) + what it is aligned to."""
        sentence_folder.save(folder, self.tower.merged_encoder(), self.tower.tokenizer, self.tower.dense,
                             self.tower.prompt, self.tower.max_length,
                             alignment={"base_model": self.base_name, "base_fingerprint": base_fingerprint(self.clip),
                                        "projection_dim": self.tower.dense.out_features,
                                        "logit_scale": self.logit_scale.item()})


def base_fingerprint(clip_model: nn.Module) -> str:
    """Which image embedding space a tower is aligned to: a hash of the base's image projection."""
    from turkclip.cache import tensors_fingerprint

    return tensors_fingerprint({"visual_projection": clip_model.visual_projection.weight})


def new_text_tower(name: str, projection_dim: int) -> TextTower:
    """A tower around the encoder `name` (hub id or folder) with a fresh projection — or, when `name` is a
    tower turkclip trained, that tower with its projection, to train further."""
    if sentence_folder.is_tower(name):
        tower, _ = load_text_tower(name)
        return tower
    encoder, tokenizer = sentence_folder.load_encoder(name)
    dense = nn.Linear(encoder.config.hidden_size, projection_dim)
    return TextTower(encoder, tokenizer, dense, sentence_folder.default_prompt(name))


def load_text_tower(folder: str | Path) -> tuple[TextTower, dict]:
    """A trained tower from its sentence-transformers folder, and its alignment record."""
    encoder, tokenizer, dense, prompt, max_length, alignment = sentence_folder.load(folder)
    return TextTower(encoder, tokenizer, dense, prompt, max_length), alignment


def swap_text_tower(clip, tower: TextTower, alignment: dict | None = None, source: str = ""):
    """`clip` with its captions going through `tower` (a new `Clip`; the base model is shared, frozen)."""
    from turkclip.models.clip import Clip

    if tower.dense.out_features != clip.model.config.projection_dim:
        raise TurkclipError(f"text tower {source} projects to {tower.dense.out_features} dimensions but {clip.name}'s"
                            f" embeddings have {clip.model.config.projection_dim}: it was aligned to another base"
                            f" ({(alignment or {}).get('base_model')!r}); pass that --model")
    if alignment and alignment.get("base_fingerprint") not in (None, base_fingerprint(clip.model)):
        raise TurkclipError(f"text tower {source} is aligned to base {alignment.get('base_model')!r}, not to {clip.name}"
                            f" (its image embeddings differ); pass --model {alignment.get('base_model')}")
    scale = (alignment or {}).get("logit_scale")
    model = SwappedClip(clip.model, tower, clip.name, scale)
    return Clip(model, TowerText(tower), clip.preprocess, clip.name)

