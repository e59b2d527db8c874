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


def parse_labels(text: str) -> list[str]:
    """'kedi, köpek,kuş' or one label per line → ['kedi', 'köpek', 'kuş'] (duplicates refused)."""
    labels = [part.strip() for line in text.splitlines() for part in line.split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise TurkclipError("give at least one label (comma-separated, or one per line)")
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise TurkclipError(f"label given twice: {', '.join(dupes)}")
    return labels


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
        logits = encoder.logit_scale * encode_photo(encoder, image)[0] @ targets.T
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        results.append(sorted(zip(labels, probs.tolist()), key=lambda lp: -lp[1]))
    return results
