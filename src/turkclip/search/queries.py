"""Text queries → unit-length embeddings, in one place.

Every text that is matched against images — a search box query, a zero-shot label prompt,
a candidate caption — goes through `encode_queries`. A model whose text side is swapped
(e.g. a separate Turkish text tower, the index's `text_model` field) plugs in here and
nowhere else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from turkclip.embedding.embed import embed_texts
from turkclip.errors import TurkclipError
from turkclip.models.clip import Clip


def encode_queries(clip: Clip, texts: list[str], lang: str = "tr", device: torch.device | str = "cpu",
                   precision: str = "fp32") -> torch.Tensor:
    """Texts → L2-normalised float32 embeddings [N, D] on the CPU, comparable with image embeddings."""
    texts = [t.strip() for t in texts]
    if not texts or not all(texts):
        raise TurkclipError("a query is empty: type a few words to search for")
    device = torch.device(device)
    model = clip.model.to(device).eval()
    return F.normalize(embed_texts(model, clip.text, texts, lang, device, precision), dim=-1)


@torch.inference_mode()
def encode_photo(clip: Clip, photo, device: torch.device | str = "cpu", precision: str = "fp32") -> torch.Tensor:
    """One photo (a path or an open binary file) → its L2-normalised float32 embedding [1, D].

    Decoded by the project's decoder (`load_image`); anything PIL cannot read is a `TurkclipError`.
    """
    from PIL import UnidentifiedImageError

    from turkclip.data.images import DECODE_ERRORS, load_image
    from turkclip.embedding.embed import embed_images

    try:
        pixels = torch.from_numpy(load_image(photo, clip.preprocess.size))[None]
    except DECODE_ERRORS as e:
        name = getattr(photo, "name", photo)
        why = "not a photo format PIL reads" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
        raise TurkclipError(f"cannot read {name} as an image ({why.splitlines()[0]})") from None
    device = torch.device(device)
    model = clip.model.to(device).eval()
    return F.normalize(embed_images(model, pixels, clip.preprocess, device, precision, progress=False), dim=-1)
