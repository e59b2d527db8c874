"""Evaluate a CLIP (base, or base + adapter) on one split: retrieval metrics both ways.

Under several processes (torchrun) every process embeds a share of the images and captions (`shard`), and
the metrics are computed once, by rank 0, from the gathered embeddings: every process returns the same dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from turkclip import cache
from turkclip.data import pixel_store
from turkclip.data.dataset import ImageTextSet
from turkclip.data.images import Preprocess
from turkclip.embedding import shard
from turkclip.embedding.embed import embed_images, embed_texts, image_bank_key
from turkclip.evaluation.metrics import legacy_in_batch_top1, retrieval_metrics
from turkclip.models.text import TextEncoder


def evaluate(model, text: TextEncoder, preprocess: Preprocess, data: ImageTextSet, device: torch.device,
             precision: str = "fp32", image_emb: torch.Tensor | None = None) -> dict:
    """Metrics shaped as `turkclip evaluate --json` writes them.

    `image_emb` may be given (e.g. cached embeddings of a frozen image tower) to skip the image pass.
    """
    was_training = model.training
    model.eval()
    try:
        if image_emb is None:
            image_emb = image_embeddings(model, data, preprocess, device, precision)
        texts, text_image = data.texts()
        text_emb = shard.embed(texts, lambda part: embed_texts(model, text, part, data.lang, device, precision))
    finally:
        model.train(was_training)
    return shard.once(lambda: _metrics(text_emb, image_emb, text_image, precision))


def image_embeddings(model, data: ImageTextSet, preprocess: Preprocess, device: torch.device,
                     precision: str = "fp32", cache_dir: Path | None = None) -> torch.Tensor:
    """Unnormalised embeddings of the split's images [N, D]: the cached bank of this image tower and these images
    when `cache_dir` holds one (made by text-only training, or while shards were read), else embedded a share per
    process; every process gets them all."""
    key = image_bank_key("image-embeds-v3", model, pixel_store.fingerprint(data.pixels), preprocess, precision)
    hit = cache.load_array(cache_dir, "image-embeds", key)
    if hit is not None:
        return hit
    progress = shard.is_writer()  # one progress bar, not one per process
    return shard.embed(data.pixels, lambda part: embed_images(model, part, preprocess, device, precision,
                                                              progress=progress))


def _metrics(text_emb: torch.Tensor, image_emb: torch.Tensor, text_image: torch.Tensor, precision: str) -> dict:
    text_emb, image_emb = F.normalize(text_emb, dim=-1), F.normalize(image_emb, dim=-1)
    result = retrieval_metrics(text_emb, image_emb, text_image)
    result["legacy_in_batch_top1"] = legacy_in_batch_top1(text_emb, image_emb[text_image])
    result["mean_recall"] = sum(result[d][k] for d in ("text_to_image", "image_to_text")
                                for k in ("R@1", "R@5", "R@10")) / 6
    result["precision"] = precision  # bf16 embeddings can move near-tied ranks: a number says how it was made
    return result
