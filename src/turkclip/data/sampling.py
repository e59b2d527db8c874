"""Which captions go into which training batch, epoch by epoch.

Each epoch visits every image once, in a shuffled order, with one of its captions drawn
at random, so no image appears twice in a batch (a duplicate would be a false negative
for the contrastive loss). The order and the draws are a pure function of (seed, epoch):
a resumed run rebuilds exactly the batches it would have seen, and skips the ones done.

With rehearsal, a fraction of items use a caption in the base language (English) instead
of the target language, which keeps the adapter from making the model forget it.

With `flip` (augmentation), each item whose image's coin (`augment.flip_coin`, a function of seed,
epoch and image) comes up, and whose caption can be mirrored safely, gets the flipped caption
and `Item.flip`; the image side mirrors exactly those items.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from turkclip.data.augment import flip_coin
from turkclip.data.flip_caption import flipped_or_none


@dataclass(frozen=True)
class Item:
    image: int  # index into the ImageTextSet
    text: str
    lang: str
    flip: bool = False  # the image is mirrored and `text` is already the mirrored caption


def epoch_batches(
    captions: list[list[str]], lang: str, batch_size: int, seed: int, epoch: int,
    rehearsal: list[list[str]] | None = None, rehearsal_lang: str = "en", rehearsal_ratio: float = 0.0,
    flip: bool = False, order: list[int] | None = None,
) -> list[list[Item]]:
    """The batches of one epoch. Images without captions are skipped; a last batch of one is dropped.
    `order`: the images in the order a streamed set visits them (`stream.visit_order`), instead of a shuffle."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    shuffled = torch.randperm(len(captions), generator=g).tolist()  # drawn either way: the draws below stay the same
    order = shuffled if order is None else order
    draws = torch.rand(len(captions), generator=g).tolist()  # caption choice per image
    use_rehearsal = (torch.rand(len(captions), generator=g) < rehearsal_ratio).tolist()
    items = []
    for i in order:
        pool, pool_lang = captions[i], lang
        if rehearsal is not None and use_rehearsal[i] and rehearsal[i]:
            pool, pool_lang = rehearsal[i], rehearsal_lang
        if pool:
            items.append(_maybe_flipped(Item(i, pool[int(draws[i] * len(pool))], pool_lang), flip, seed, epoch))
    batches = [items[s : s + batch_size] for s in range(0, len(items), batch_size)]
    return [b for b in batches if len(b) > 1]


def _maybe_flipped(item: Item, flip: bool, seed: int, epoch: int) -> Item:
    if not (flip and flip_coin(seed, epoch, item.image)):
        return item
    text = flipped_or_none(item.text, item.lang)
    return item if text is None else Item(item.image, text, item.lang, True)
