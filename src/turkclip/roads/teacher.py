"""Teacher targets for multilingual distillation (Reimers & Gurevych 2020; M-CLIP).

The base CLIP's own text tower is the teacher: it embeds every English caption of the
training images once (cached on disk, like the image embeddings). The new tower is then
taught to put
- an English caption where the teacher puts that same caption, and
- a caption in the new language where the teacher puts the English captions of the same
  image (their normalised mean: TasvirEt's captions describe the image, they are not
  translations of the English ones).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from turkclip import cache
from turkclip.data.sampling import Item
from turkclip.embedding.embed import embed_texts, resolve_precision
from turkclip.errors import TurkclipError


class Teacher:
    def __init__(self, texts: list[str], embeds: torch.Tensor, per_image: torch.Tensor, lang: str):
        self.row = {t: i for i, t in enumerate(texts)}
        self.embeds, self.per_image, self.lang = embeds, per_image, lang

    def targets(self, items: list[Item], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """One teacher vector per training item, and whether it has one (an image without English captions has none)."""
        rows = [self.embeds[self.row[it.text]] if it.lang == self.lang and it.text in self.row
                else self.per_image[it.image] for it in items]
        targets = torch.stack(rows)
        return targets.to(device), (targets.abs().sum(-1) > 0).to(device)


def build_teacher(clip, english: list[list[str]] | None, lang: str, device: torch.device, precision: str,
                  cache_dir: Path | None) -> Teacher:
    """Embed the English captions (`english[i]`: those of image i) with the base CLIP's text tower, once."""
    if english is None:
        raise TurkclipError("distillation (--objective distill or mix) needs --rehearsal-captions: English captions of"
                            " the same images, which the base CLIP's text tower embeds as the teacher")
    texts = sorted({c for caps in english for c in caps})
    if not texts:
        raise TurkclipError("distillation needs base-language captions of the training images (--rehearsal-captions);"
                            " none of the train images has one")
    precision = resolve_precision(precision, device)
    key = cache.make_key("teacher-v1", cache.tensors_fingerprint(clip.model.text_model.state_dict()),
                         cache.tensors_fingerprint({"p": clip.model.text_projection.weight}), texts, lang, precision)
    hit = cache.load(cache_dir, "teacher", key)
    if hit is not None:
        embeds = hit[0]["embeds"]
    else:
        embeds = embed_texts(clip.model.to(device).eval(), clip.text, texts, lang, device, precision)
        cache.save(cache_dir, "teacher", key, {"embeds": embeds}, {"n": len(texts)})
    normed = F.normalize(embeds, dim=-1)
    row = {t: i for i, t in enumerate(texts)}
    per_image = torch.zeros(len(english), embeds.shape[1])
    for i, caps in enumerate(english):
        if caps:
            per_image[i] = F.normalize(normed[[row[c] for c in caps]].mean(0), dim=-1)
    return Teacher(texts, normed, per_image, lang)
