"""Zero-shot classification with Turkish labels, by prompt ensembling (CLIP paper, section 3.1.4).

Each label is put into several Turkish sentence templates ("bir {} fotoğrafı", ...); the label's
embedding is the normalised mean of its templates' embeddings, and an image's label
probabilities are the softmax of CLIP's scaled cosine similarities to those means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from turkclip.errors import TurkclipError
from turkclip.search.encoder import Encoder, encode_photo

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


def label_embeddings(encoder: Encoder, labels: list[str], templates=TURKISH_TEMPLATES, lang: str = "tr") -> np.ndarray:
    """One unit vector per label: the normalised mean over templates [L, D]."""
    if not labels:
        raise TurkclipError("give at least one label")
    texts = [t.format(label) for label in labels for t in templates]
    mean = encoder.texts(texts, lang).reshape(len(labels), len(templates), -1).mean(1)
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def classify(encoder: Encoder, images: list, labels: list[str], templates=TURKISH_TEMPLATES,
             lang: str = "tr") -> list[list[tuple[str, float]]]:
    """For each image (a path or an open binary file): [(label, probability)], most likely first."""
    targets = label_embeddings(encoder, labels, templates, lang)
    results = []
    for image in images:
        if isinstance(image, (str, Path)) and not Path(image).is_file():
            raise TurkclipError(f"image not found: {image}")
        results.append(rank(encoder, labels, targets, encode_photo(encoder, image)))
    return results


def rank(encoder: Encoder, labels: list[str], targets: np.ndarray, image: np.ndarray) -> list[tuple[str, float]]:
    """One image embedding [1, D] against `label_embeddings` [L, D]: [(label, probability)], most likely first."""
    logits = encoder.logit_scale * image[0] @ targets.T
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return sorted(zip(labels, probs.tolist()), key=lambda lp: -lp[1])
