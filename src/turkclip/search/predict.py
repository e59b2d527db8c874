"""Zero-shot prediction: one image, several captions → a probability per caption."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from turkclip.embedding.embed import embed_texts, features
from turkclip.errors import TurkclipError
from turkclip.models.clip import Clip
from turkclip.search.queries import photo_pixels


@torch.inference_mode()
def predict(clip: Clip, image: str | Path, captions: list[str], lang: str = "tr",
            device: torch.device | str = "cpu") -> list[float]:
    """Softmax over CLIP's image→caption logits, as in CLIP's zero-shot example."""
    if not captions:
        raise TurkclipError("give at least one caption")
    path = Path(image)
    if not path.is_file():
        raise TurkclipError(f"image not found: {path}")
    pixels = photo_pixels(clip, path)
    device = torch.device(device)
    model = clip.model.to(device).eval()
    image_emb = features(model.get_image_features(pixel_values=clip.preprocess.normalize(pixels.to(device)))).float()
    text_emb = embed_texts(model, clip.text, captions, lang, device).to(device)
    logits = model.logit_scale.exp() * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).t()
    return logits.softmax(-1)[0].tolist()
