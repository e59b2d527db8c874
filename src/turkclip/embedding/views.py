"""Augmentation for text-only training: K augmented views per image, embedded once and cached.

With the image tower frozen (`--lora-towers text`) image embeddings are computed once, not per
batch, so augmenting pixels per batch would cost the image forward that text-only training
exists to skip. Instead every train image gets `views` augmented versions (crop/colour drawn per
(seed, view, image)), each embedded once — and, when the policy flips, its mirror image too,
because whether an item is flipped depends on its caption of the epoch. Each epoch then uses one
view per image, chosen by (seed, epoch, image), mirrored when that epoch's item is. The embeddings
are cached on disk under a key that holds the image tower, the pixels, the preprocessing, the
precision, the policy, the seed and the number of views.
"""

from __future__ import annotations

from pathlib import Path

import torch

from turkclip import cache
from turkclip.data.augment import AugmentPolicy, augment_batch, choose_view
from turkclip.data.dataset import ImageTextSet
from turkclip.data.images import Preprocess
from turkclip.embedding.embed import embed_images, eval_mode, image_bank_key
from turkclip.errors import TurkclipError
from turkclip.progress import bar as progress_bar

CHUNK = 512  # images augmented at a time (bounds memory: 512 ViT-B/32 images are 77 MB of uint8)


class ViewBank:
    """Embeddings [views, 1 or 2 (plain, mirrored), N, D] of a split's augmented views."""

    def __init__(self, embeds: torch.Tensor, seed: int):
        self.embeds, self.seed = embeds, seed

    @property
    def views(self) -> int:
        return self.embeds.shape[0]

    def for_epoch(self, epoch: int, batches) -> torch.Tensor:
        """[N, D]: each image's view for `epoch`, mirrored where the epoch's item is flipped."""
        n = self.embeds.shape[2]
        flipped = torch.zeros(n, dtype=torch.long)
        for batch in batches:
            for item in batch:
                flipped[item.image] = int(item.flip)
        view = torch.tensor([choose_view(self.seed, epoch, i, self.views) for i in range(n)])
        return self.embeds[view, flipped, torch.arange(n)]


def view_bank(model, data: ImageTextSet, preprocess: Preprocess, device: torch.device, precision: str,
              cache_dir: Path | None, policy: AugmentPolicy, seed: int, views: int) -> ViewBank:
    """Embed (or read from the cache) the augmented views of `data` for text-only training."""
    if views < 1:
        raise TurkclipError(f"--augment-views {views}: need at least 1 view per image")
    if not policy.changes_pixels_beyond_flip:
        views = 1  # flip only: every view would be the same image
    mirrors = (False, True) if policy.flip else (False,)
    key = image_bank_key("image-views-v2", model, data, preprocess, precision, str(policy), seed, views)
    with cache.main_process_first():  # several processes: one embeds, the others read its entry
        hit = cache.load(cache_dir, "image-views", key)
        if hit is not None:
            return ViewBank(hit[0]["embeds"], seed)
        n = len(data.pixels)
        out = torch.empty(0)
        jobs = [(v, m, s) for v in range(views) for m in mirrors for s in range(0, n, CHUNK)]
        with eval_mode(model):
            for v, mirrored, start in progress_bar(jobs, desc=f"embedding {views} augmented views", leave=False):
                images = list(range(start, min(n, start + CHUNK)))
                pixels = augment_batch(data.pixels, images, [mirrored] * len(images), policy, seed, view=v)
                embeds = embed_images(model, pixels, preprocess, device, precision, progress=False)
                if out.numel() == 0:
                    out = torch.empty(views, len(mirrors), n, embeds.shape[1])
                out[v, int(mirrored), start : start + len(images)] = embeds
        cache.save(cache_dir, "image-views", key, {"embeds": out}, {"policy": str(policy), "views": views})
    return ViewBank(out, seed)
