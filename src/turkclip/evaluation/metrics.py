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

# Similarities are computed for a block of texts at a time (texts × all images), so memory stays at
# about CHUNK_ELEMENTS floats whatever the gallery: 100k captions × 20k images never exist as one matrix.
# 8 MB: a 64 MB block and its comparison masks (~110 MB) are reached at 3000 images × 13 500 captions, not at
# 300, so `evaluate`'s peak RSS grew with the split; smaller blocks were not slower (5000 images × 25 000 captions, one thread: 8.0-10.6 s against
# 10.1-13.2 s at 64 MB, a loaded 2-core machine).
CHUNK_ELEMENTS = 2**21


def _text_blocks(n_texts: int, n_images: int) -> list[slice]:
    size = max(1, CHUNK_ELEMENTS // max(1, n_images))
    return [slice(s, min(s + size, n_texts)) for s in range(0, n_texts, size)]


def retrieval_ranks(text_emb: torch.Tensor, image_emb: torch.Tensor,
                    text_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(text→image rank per text, image→text rank per image that has a caption), block by block.

    Two passes over the same blocks, so every similarity is the same float in both: the first ranks each
    text's own image and finds each image's best-scored own caption, the second counts, per image, the
    other images' captions scoring at least that (ties count against the model, see the module docstring).
    Own captions tied with the best one are hits too, so they do not push it down.
    """
    text_emb, image_emb = text_emb.float(), image_emb.float()
    n_images = image_emb.shape[0]
    blocks = _text_blocks(text_emb.shape[0], n_images)
    t2i, best_own = [], torch.full((n_images,), float("-inf"))
    for block in blocks:
        sim = text_emb[block] @ image_emb.t()  # [block texts, images]
        correct = sim.gather(1, text_image[block, None])  # the own image's score
        t2i.append((sim >= correct).sum(1))  # the correct image itself is counted, so rank ≥ 1
        best_own.scatter_reduce_(0, text_image[block], correct[:, 0], reduce="amax")
    above = torch.zeros(n_images, dtype=torch.long)
    images = torch.arange(n_images)
    for block in blocks:
        sim = text_emb[block] @ image_emb.t()
        hits = (sim >= best_own[None, :]) & (text_image[block, None] != images[None, :])
        above += hits.sum(0)
    has_caption = torch.zeros(n_images, dtype=torch.bool)
    has_caption[text_image] = True
    return torch.cat(t2i) if t2i else torch.zeros(0, dtype=torch.long), (above + 1)[has_caption]


def summarize(ranks: torch.Tensor) -> dict[str, float]:
    ranks = ranks.double()  # float32 means drift in the 7th digit
    return {
        "R@1": 100 * (ranks <= 1).double().mean().item(),
        "R@5": 100 * (ranks <= 5).double().mean().item(),
        "R@10": 100 * (ranks <= 10).double().mean().item(),
        "mean_rank": ranks.mean().item(),
        "median_rank": _median_rank(ranks),
    }


def _median_rank(ranks: torch.Tensor) -> float:
    """An integer rank, as retrieval papers report it (VSE++ and its successors: floor of the median): with an
    even number of queries the midpoint of the two middle ranks is rounded down (ranks 1, 2, 3, 4 → 2)."""
    s = ranks.sort().values
    n = len(s)
    return float((s[(n - 1) // 2] + s[n // 2]).item() // 2) if n else float("nan")


def retrieval_metrics(text_emb: torch.Tensor, image_emb: torch.Tensor, text_image: torch.Tensor) -> dict:
    """Full-gallery retrieval both ways from (normalised) embeddings; see the module docstring."""
    t2i, i2t = retrieval_ranks(text_emb.cpu(), image_emb.cpu(), text_image.cpu())
    return {
        "text_to_image": summarize(t2i),
        "image_to_text": summarize(i2t),
        "n_images": int(image_emb.shape[0]),
        "n_texts": int(text_emb.shape[0]),
    }


def clip_benchmark_names(metrics: dict, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """R@k of `retrieval_metrics` under the names and in the units of CLIP_benchmark's result files, so a turkclip
    number can be set beside published ones: image_retrieval_recall@k is text→image (captions query images),
    text_retrieval_recall@k image→text, each a fraction in [0, 1] (turkclip's R@k are percentages)."""
    names = {}
    for k in ks:
        names[f"image_retrieval_recall@{k}"] = metrics["text_to_image"][f"R@{k}"] / 100
        names[f"text_retrieval_recall@{k}"] = metrics["image_to_text"][f"R@{k}"] / 100
    return names


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
