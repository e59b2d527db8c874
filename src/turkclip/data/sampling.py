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

Parallel sentences (`--parallel-captions`, the text-tower road) have no image: each epoch visits
every pair once, shuffled by (seed, epoch) too (`pair_batches`); a pair is two items, the
base-language sentence and its translation, both with the base-language sentence as `Item.target`
(what the teacher embeds for them). Beside image–caption batches, each step gets the next batch of
pairs (`with_pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from turkclip.data.augment import flip_coin
from turkclip.data.flip_caption import flipped_or_none


@dataclass(frozen=True)
class Item:
    image: int  # index into the ImageTextSet; NO_IMAGE for a parallel sentence
    text: str
    lang: str
    flip: bool = False  # the image is mirrored and `text` is already the mirrored caption
    target: str | None = None  # a parallel sentence: the base-language sentence whose teacher embedding it learns


NO_IMAGE = -1
_PAIR_SALT = 7_919  # pairs are shuffled apart from images: adding a corpus does not change the image batches


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


def pair_batches(pairs: list[tuple[str, str]], base_lang: str, lang: str, batch_size: int, seed: int,
                 epoch: int) -> list[list[Item]]:
    """The parallel sentences of one epoch: every (base, new) pair once, in an order that is a function of (seed,
    epoch), `batch_size` pairs (2 × batch_size items) a batch; a last batch of one pair is dropped."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch + _PAIR_SALT)
    order = torch.randperm(len(pairs), generator=g).tolist()
    batches = [[Item(NO_IMAGE, text, text_lang, target=pairs[i][0])
                for i in order[s : s + batch_size] for text, text_lang in zip(pairs[i], (base_lang, lang))]
               for s in range(0, len(order), batch_size)]
    return [b for b in batches if len(b) > 2]


def with_pairs(image_batches: list[list[Item]], pairs: list[list[Item]]) -> list[list[Item]]:
    """Each image–caption batch followed by a batch of parallel sentences (the pair batches cycled when there are
    fewer of them); without image batches, the pair batches alone."""
    if not image_batches or not pairs:
        return image_batches or pairs
    return [batch + pairs[k % len(pairs)] for k, batch in enumerate(image_batches)]
