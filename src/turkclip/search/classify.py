"""Zero-shot classification with Turkish labels, by prompt ensembling (CLIP paper, section 3.1.4).

Each label is put into several Turkish sentence templates ("bir {} fotoğrafı", ...); the label's
embedding is the normalised mean of its templates' embeddings, and an image's label
probabilities are the softmax of CLIP's scaled cosine similarities to those means.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from turkclip.errors import TurkclipError
from turkclip.models.clip import Clip
from turkclip.search import (
    queries,  # queries.encode_queries: the one route for text (a swapped text tower plugs in there)
)

TURKISH_TEMPLATES = (
    "bir {} fotoğrafı",
    "{} fotoğrafı",
    "bir {} resmi",
    "bir {} görüntüsü",
    "bir {} görseli",
    "bu bir {}",
    "yakından çekilmiş bir {} fotoğrafı",
    "güzel bir {} fotoğrafı",
)
AS_IS = ("{}",)  # captions that are already sentences (the predict/upload page case)


@torch.inference_mode()
def label_embeddings(clip: Clip, labels: list[str], templates=TURKISH_TEMPLATES, lang: str = "tr",
                     device: torch.device | str = "cpu", precision: str = "fp32") -> torch.Tensor:
    """One unit vector per label: the normalised mean over templates [L, D]."""
    if not labels:
        raise TurkclipError("give at least one label")
    texts = [t.format(label) for label in labels for t in templates]
    emb = queries.encode_queries(clip, texts, lang, device, precision).view(len(labels), len(templates), -1)
    return F.normalize(emb.mean(1), dim=-1)


@torch.inference_mode()
def classify(clip: Clip, images: list, labels: list[str], templates=TURKISH_TEMPLATES, lang: str = "tr",
             device: torch.device | str = "cpu", precision: str = "fp32") -> list[list[tuple[str, float]]]:
    """For each image (a path or an open binary file): [(label, probability)], most likely first."""
    targets = label_embeddings(clip, labels, templates, lang, device, precision)
    results = []
    for image in images:
        if isinstance(image, (str, Path)) and not Path(image).is_file():
            raise TurkclipError(f"image not found: {image}")
        results.append(rank(clip, labels, targets, queries.encode_photo(clip, image, device, precision)))
    return results


@torch.inference_mode()
def rank(clip: Clip, labels: list[str], targets: torch.Tensor, image: torch.Tensor) -> list[tuple[str, float]]:
    """One image embedding [1, D] against `label_embeddings` [L, D]: [(label, probability)], most likely first."""
    probs = (clip.model.logit_scale.exp().float().cpu() * image @ targets.t()).softmax(-1)[0]
    return sorted(zip(labels, probs.tolist()), key=lambda lp: -lp[1])
