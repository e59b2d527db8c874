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
from turkclip.search.texts import check_text


def encode_queries(clip: Clip, texts: list[str], lang: str = "tr", device: torch.device | str = "cpu",
                   precision: str = "fp32") -> torch.Tensor:
    """Texts → L2-normalised float32 embeddings [N, D] on the CPU, comparable with image embeddings."""
    if not texts:
        raise TurkclipError("a query is empty: type a few words to search for")
    texts = [check_text(t, "a query") for t in texts]
    device = torch.device(device)
    model = clip.model.to(device).eval()
    return F.normalize(embed_texts(model, clip.text, texts, lang, device, precision), dim=-1)


def photo_pixels(clip: Clip, photo) -> torch.Tensor:
    """One photo (a path or an open binary file) → uint8 pixels [1, 3, S, S], decoded by the project's decoder
    (`load_image`, which bounds the pixels it decodes); anything it cannot or will not read is a `TurkclipError`.
    Kept apart from `encode_pixels` so that a server decodes an upload without holding the model."""
    from turkclip.data.images import DECODE_ERRORS, describe, load_image

    try:
        return torch.from_numpy(load_image(photo, clip.preprocess.size))[None]
    except DECODE_ERRORS as e:
        raise TurkclipError(f"{getattr(photo, 'name', photo)}: {describe(e)}") from None


@torch.inference_mode()
def encode_pixels(clip: Clip, pixels: torch.Tensor, device: torch.device | str = "cpu",
                  precision: str = "fp32") -> torch.Tensor:
    """`photo_pixels` → its L2-normalised float32 embedding [1, D]."""
    from turkclip.embedding.embed import embed_images

    device = torch.device(device)
    model = clip.model.to(device).eval()
    return F.normalize(embed_images(model, pixels, clip.preprocess, device, precision, progress=False), dim=-1)


def encode_photo(clip: Clip, photo, device: torch.device | str = "cpu", precision: str = "fp32") -> torch.Tensor:
    """One photo (a path or an open binary file) → its L2-normalised float32 embedding [1, D]."""
    return encode_pixels(clip, photo_pixels(clip, photo), device, precision)
