"""Retrieval metrics over a whole gallery (the CLIP_benchmark protocol).

* text→image: each caption is a query; its rank is the rank of its own image among all images.
* image→text: each image that has captions is a query; its rank is the best rank of any of its
  captions among all captions ("any of an image's captions counts as a hit").

Ranks are 1-based and pessimistic under ties: a wrong item tied with the correct one counts as
ranked above it, so a model that scores everything equally gets rank = gallery size, not 1
(image→text: 1 + the number of other images' captions).
"""

from __future__ import annotations

import torch


def ranks_text_to_image(sim: torch.Tensor, text_image: torch.Tensor) -> torch.Tensor:
    """sim: [texts, images] similarities; text_image[t]: index of caption t's image. → rank per text."""
    correct = sim.gather(1, text_image[:, None])  # [texts, 1]
    return (sim >= correct).sum(1)  # the correct image itself is counted, so rank ≥ 1


def ranks_image_to_text(sim: torch.Tensor, text_image: torch.Tensor) -> torch.Tensor:
    """Best rank of any own caption, per image that has at least one caption. sim: [texts, images]."""
    sim = sim.t()  # [images, texts]
    own = text_image[None, :] == torch.arange(sim.shape[0], device=sim.device)[:, None]  # [images, texts]
    has_caption = own.any(1)
    best_own = sim.masked_fill(~own, float("-inf")).max(1).values  # best-scored own caption
    # Pessimistic rank of the first own caption: 1 + every other image's caption scoring >= it.
    # Own captions tied with it are hits too, so they do not push it down (duplicate captions
    # of one image must not cost R@1).
    ranks = ((sim >= best_own[:, None]) & ~own).sum(1) + 1
    return ranks[has_caption]


def summarize(ranks: torch.Tensor) -> dict[str, float]:
    ranks = ranks.double()  # float32 means drift in the 7th digit
    return {
        "R@1": 100 * (ranks <= 1).double().mean().item(),
        "R@5": 100 * (ranks <= 5).double().mean().item(),
        "R@10": 100 * (ranks <= 10).double().mean().item(),
        "mean_rank": ranks.mean().item(),
        "median_rank": ranks.quantile(0.5).item(),  # the midpoint of the two middle ranks when even
    }


def retrieval_metrics(text_emb: torch.Tensor, image_emb: torch.Tensor, text_image: torch.Tensor) -> dict:
    """Full-gallery retrieval both ways from (normalised) embeddings; see the module docstring."""
    sim = text_emb.float() @ image_emb.float().t()
    return {
        "text_to_image": summarize(ranks_text_to_image(sim, text_image)),
        "image_to_text": summarize(ranks_image_to_text(sim, text_image)),
        "n_images": int(image_emb.shape[0]),
        "n_texts": int(text_emb.shape[0]),
    }


def legacy_in_batch_top1(text_emb: torch.Tensor, image_emb_per_text: torch.Tensor, batch_size: int = 64) -> float:
    """The seed notebook's number: (image, caption) pairs in file order, cut into batches of 64;
    the fraction of pairs whose image scores its own caption highest within the batch.

    Kept only so our numbers can be set beside the seed's 0.12 → 0.50: it depends on batch size
    and order, and two captions of the same image in one batch make it ambiguous.
    """
    hits = 0
    for start in range(0, len(text_emb), batch_size):
        t = text_emb[start : start + batch_size].float()
        i = image_emb_per_text[start : start + batch_size].float()
        logits = i @ t.t()  # [images, texts], as logits_per_image
        hits += (logits.argmax(1) == torch.arange(len(t))).sum().item()
    return hits / len(text_emb)
