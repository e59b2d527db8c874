"""Embedding images and captions in large batches, without autograd.

Also the frozen-tower cache: when only the text tower is adapted, an image's embedding
never changes, so it is computed once per (image tower weights, image files,
preprocessing) and read from disk afterwards.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from turkclip import cache
from turkclip.data import pixel_store
from turkclip.data.dataset import ImageTextSet
from turkclip.data.images import Preprocess
from turkclip.models.text import TextEncoder
from turkclip.progress import bar as progress_bar


def features(output) -> torch.Tensor:
    """Projected features from `get_text_features` / `get_image_features` (a tensor in
    transformers 4, a model output whose `pooler_output` holds them in transformers 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def text_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, buckets: int = 4) -> torch.Tensor:
    """Projected text features, computed in `buckets` groups of similar caption length.

    A batch is padded to its longest caption, and one long caption would make every other pay
    for its length. CLIP's text tower is causal (a token sees only the tokens before it) and
    pools at the end-of-text token, so padding never changes a caption's features: sorting by
    length and trimming each group to its own longest is exact and, on typical captions, about
    twice as fast as one padded batch.
    """
    lengths = attention_mask.sum(1)
    order = lengths.argsort()
    parts = []
    for idx in order.chunk(max(1, min(buckets, len(order)))):
        n = int(lengths[idx].max())
        trimmed = {"input_ids": input_ids[idx, :n], "attention_mask": attention_mask[idx, :n]}
        parts.append(features(model.get_text_features(**trimmed)))
    return torch.cat(parts)[order.argsort()]


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast on `device`, or a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' → bf16 where the hardware runs it natively (recent GPUs, CPUs with AVX512-BF16/AMX), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return "bf16"
    return "fp32"


@torch.inference_mode()
def embed_images(model, pixels: torch.Tensor, preprocess: Preprocess, device: torch.device,
                 precision: str = "fp32", batch_size: int | None = None, progress: bool = True) -> torch.Tensor:
    """uint8 pixels [N, 3, S, S] → projected, unnormalised image embeddings [N, D] (fp32, on CPU).

    Batches of 256 on an accelerator; of 64 on the CPU, where a batch's float pixels are the process's memory
    (600 KB an image at 224 px: 154 MB at 256, which made the peak RSS of a run grow with its validation split
    until the split reached 256 images) and a larger batch is not faster (ViT-B/32, 2 loaded cores, interleaved:
    4.2-4.8 images/s at 64, 4.3-4.6 at 256; bench/RESULTS.md, 2026-12-05)."""
    batch_size = batch_size or (64 if device.type == "cpu" else 256)
    out = []
    starts = range(0, len(pixels), batch_size)
    for start in progress_bar(starts, desc="embedding images", leave=False, enabled=progress):
        batch = preprocess.normalize(pixels[start : start + batch_size].to(device, non_blocking=True))
        with autocast(device, precision):
            out.append(features(model.get_image_features(pixel_values=batch)).float().cpu())
    return torch.cat(out)


@torch.inference_mode()
def embed_texts(model, text: TextEncoder, texts: list[str], lang: str, device: torch.device,
                precision: str = "fp32", batch_size: int = 512) -> torch.Tensor:
    """Captions → projected, unnormalised text embeddings [N, D] (fp32, on CPU)."""
    out = []
    for start in range(0, len(texts), batch_size):
        batch = {k: v.to(device) for k, v in text(texts[start : start + batch_size], lang).items()}
        with autocast(device, precision):
            out.append(text_features(model, **batch).float().cpu())
    return torch.cat(out)


def image_tower(model) -> torch.nn.Module:
    """The parts of a (possibly PEFT-wrapped) CLIPModel that turn pixels into embeddings."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return torch.nn.ModuleList([base.vision_model, base.visual_projection])


def cached_image_embeddings(model, data: ImageTextSet, preprocess: Preprocess, device: torch.device,
                            precision: str, cache_dir: Path | None) -> torch.Tensor:
    """Image embeddings of `data` (the tower in eval mode: no dropout), from the cache when the image tower's
    weights and config, the files, the preprocessing, the precision and the torch/transformers versions match."""
    key = image_bank_key("image-embeds-v3", model, pixel_store.fingerprint(data.pixels), preprocess, precision)
    with cache.main_process_first():  # several processes: one embeds, the others read its entry
        hit = cache.load_array(cache_dir, "image-embeds", key)  # memory-mapped: processes share one copy
        if hit is not None:
            return hit
        with eval_mode(model):
            embeds = embed_images(model, data.pixels, preprocess, device, precision)
        cache.save_array(cache_dir, "image-embeds", key, embeds)
    return cache.load_array(cache_dir, "image-embeds", key) if cache_dir is not None else embeds


class BankWriter:
    """The bank `cached_image_embeddings` would make, made from images as they stream past instead (a scan of
    WebDataset shards, `shard_set.Sink`): embedded a batch at a time and saved under the same cache key, so
    the shards are read once. `sink(fingerprint)` is None without a cache folder or when the bank is cached."""

    def __init__(self, model, preprocess: Preprocess, device: torch.device, precision: str, cache_dir: Path | None,
                 batch_size: int = 256):
        self.model, self.preprocess, self.device, self.precision = model, preprocess, device, precision
        self.cache_dir, self.batch_size = cache_dir, batch_size

    def sink(self, fingerprint: str) -> "BankWriter | None":
        self.key = image_bank_key("image-embeds-v3", self.model, fingerprint, self.preprocess, self.precision)
        if self.cache_dir is None or cache.load_array(self.cache_dir, "image-embeds", self.key) is not None:
            return None
        self.pending: list[np.ndarray] = []
        self.rows = cache.RowWriter(self.cache_dir, "image-embeds", self.key)  # on disk as they come: no O(N) memory
        self.model.to(self.device)
        return self

    def add(self, image: np.ndarray) -> None:
        self.pending.append(image)
        if len(self.pending) == self.batch_size:
            self._embed()

    def close(self) -> None:
        self._embed()
        self.rows.close()

    def _embed(self) -> None:
        if self.pending:
            pixels = torch.from_numpy(np.stack(self.pending))
            with eval_mode(self.model):
                self.rows.append(embed_images(self.model, pixels, self.preprocess, self.device, self.precision,
                                              progress=False))
            self.pending = []


def image_bank_key(kind: str, model, pixels: str, preprocess: Preprocess, precision: str, *extra) -> str:
    """The cache key of embeddings by `model`'s frozen image tower of the images named by `pixels` (a pixel
    fingerprint, `pixel_store.fingerprint`): its weights and config, the images, the preprocessing, the precision,
    the torch/transformers versions, and `extra`."""
    import transformers  # here, not at the top: photo commands import this module and need no transformers

    return cache.make_key(kind, cache.tensors_fingerprint(image_tower(model).state_dict()), tower_config(model, "vision"),
                          torch.__version__, transformers.__version__, pixels, preprocess, precision, *extra)


@contextlib.contextmanager
def eval_mode(model):
    """`model` in eval mode for the block: a cached embedding made in train mode would keep one dropout draw."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def tower_config(model, tower: str) -> dict:
    """What, besides the weights, decides the output of a CLIP tower (`tower`: "vision" or "text"): its config
    (activation, norm epsilon, attention implementation...) and the projection size; not where the model was
    loaded from. Part of the cache keys of embeddings the tower made (image bank, teacher)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = {k: v for k, v in getattr(base.config, f"{tower}_config").to_dict().items()
              if k not in ("_name_or_path", "transformers_version")}
    return {tower: config, "projection_dim": base.config.projection_dim,
            "attn": getattr(base.config, "_attn_implementation", None)}
