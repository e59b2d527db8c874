"""Teacher targets for multilingual distillation (Reimers & Gurevych 2020; M-CLIP).

The base CLIP's own text tower is the teacher: it embeds every English caption of the
training images once (cached on disk, like the image embeddings). The new tower is then
taught to put
- an English caption where the teacher puts that same caption, and
- a caption in the new language where the teacher puts the English captions of the same
  image (their normalised mean: TasvirEt's captions describe the image, they are not
  translations of the English ones).

With `--augment flip` an item may be mirrored (`Item.flip`: its image is flipped and its caption
already has left and right swapped). Its target must describe the mirrored image too, so the
teacher also embeds the mirrored English captions (`flip_caption`): a mirrored English caption
targets itself, a mirrored caption in the new language the mean of the image's mirrored English
captions. An English caption that cannot be mirrored safely is left out of that mean; an image
with none left has no mirrored target, and its mirrored items are not distilled.

Parallel sentences (`--parallel-captions`) are translations, so they need no mean: both sides of a
pair target the teacher's embedding of its base-language side (`Item.target`), as in
sentence-transformers' multilingual distillation and M-CLIP.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from turkclip import cache
from turkclip.data.flip_caption import flipped_or_none
from turkclip.data.sampling import Item
from turkclip.embedding.embed import embed_texts, resolve_precision, tower_config
from turkclip.errors import TurkclipError


class Teacher:
    """Normalised teacher vectors: one per known English caption, and per image the mean direction of its
    English captions (`per_image`) and of their mirrored versions (`per_image_flipped`, None without flips)."""

    def __init__(self, texts: list[str], embeds: torch.Tensor, per_image: torch.Tensor,
                 per_image_flipped: torch.Tensor | None, lang: str):
        self.row = {t: i for i, t in enumerate(texts)}
        self.embeds, self.per_image, self.per_image_flipped, self.lang = embeds, per_image, per_image_flipped, lang

    def targets(self, items: list[Item], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """One teacher vector per training item, and whether it has one (an image without English captions,
        or, mirrored, without one that can be mirrored safely, has none)."""
        targets = torch.stack([self._target(it) for it in items])
        return targets.to(device), (targets.abs().sum(-1) > 0).to(device)

    def of(self, texts: list[str]) -> torch.Tensor:
        """The teacher vectors of base-language sentences it embedded."""
        return self.embeds[[self.row[t] for t in texts]]

    def _target(self, item: Item) -> torch.Tensor:
        if item.target is not None:
            return self.embeds[self.row[item.target]]
        if item.lang == self.lang and item.text in self.row:
            return self.embeds[self.row[item.text]]
        if not item.flip:
            return self.per_image[item.image]
        if self.per_image_flipped is None:
            raise ValueError("a mirrored item reached a teacher built without mirrored captions (build_teacher flip=)")
        return self.per_image_flipped[item.image]


def build_teacher(clip, english: list[list[str]] | None, lang: str, device: torch.device, precision: str,
                  cache_dir: Path | None, flip: bool = False, sentences: list[str] = ()) -> Teacher:
    """Embed the English captions (`english[i]`: those of train image i; None: the run distils no image's captions)
    and the English `sentences` (the base-language sides of parallel pairs) with the base CLIP's text tower, once;
    with `flip`, the mirrored captions too."""
    if english is not None and not any(english):
        raise TurkclipError("distillation needs base-language captions of the training images (--rehearsal-captions);"
                            " none of the train images has one")
    english = english or []
    mirrored = [[m for m in (flipped_or_none(c, lang) for c in caps) if m is not None] for caps in english] if flip else None
    texts = sorted({c for caps in english + (mirrored or []) for c in caps} | set(sentences))
    normed = F.normalize(teacher_embeddings(clip, texts, lang, device, precision, cache_dir), dim=-1)
    row = {t: i for i, t in enumerate(texts)}

    def per_image(captions: list[list[str]]) -> torch.Tensor:
        means = torch.zeros(len(captions), normed.shape[1])
        for i, caps in enumerate(captions):
            if caps:
                means[i] = F.normalize(normed[[row[c] for c in caps]].mean(0), dim=-1)
        return means

    return Teacher(texts, normed, per_image(english), per_image(mirrored) if flip else None, lang)


def teacher_embeddings(clip, texts: list[str], lang: str, device: torch.device, precision: str,
                       cache_dir: Path | None) -> torch.Tensor:
    """The base's unnormalised text embeddings of `texts`, from the disk cache when `teacher_key` matches."""
    precision = resolve_precision(precision, device)
    key = teacher_key(clip, texts, lang, precision)
    hit = cache.load(cache_dir, "teacher", key)
    if hit is not None:
        return hit[0]["embeds"]
    embeds = embed_texts(clip.model.to(device).eval(), clip.text, texts, lang, device, precision)
    cache.save(cache_dir, "teacher", key, {"embeds": embeds}, {"n": len(texts)})
    return embeds


def teacher_key(clip, texts: list[str], lang: str, precision: str) -> str:
    """The cache key of the teacher's embeddings of `texts`: as complete as the image bank's (embed.image_bank_key).
    The text tower's weights and config and the projection; the token ids the tokenizer makes of `texts` (its
    vocabulary, normalisation, Turkish folding and truncation, as the pass sees them); the precision; the
    torch/transformers versions."""
    import transformers

    model = clip.model
    ids = clip.text(texts, lang)["input_ids"]
    return cache.make_key("teacher-v2", cache.tensors_fingerprint(model.text_model.state_dict()),
                          cache.tensors_fingerprint({"p": model.text_projection.weight}), tower_config(model, "text"),
                          cache.tensors_fingerprint({"ids": ids}), texts, lang, precision, torch.__version__,
                          transformers.__version__)
