"""What photo search asks of a model: texts → unit vectors, photos → unit vectors.

Two implementations answer it: `torch_encoder.TorchEncoder` (turkclip's models as trained, on torch) and
`turkclip.onnx.runtime.OnnxEncoder` (an `turkclip export-onnx` folder on onnxruntime, with no torch at all).
Indexing, search, zero-shot classification and the web app use either through this interface, so every text
query, label prompt and photo goes one way whichever engine runs it.

This module imports neither engine: `open_encoder` loads the one asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from turkclip.errors import TurkclipError


class Encoder(Protocol):
    dim: int  # embedding width
    image_size: int  # the image side's input: size × size pixels (see turkclip.data.images.Preprocess)
    logit_scale: float  # CLIP's temperature, exponentiated: zero-shot logits are logit_scale × cosine

    def texts(self, texts: list[str], lang: str = "tr") -> np.ndarray:
        """Captions or queries → L2-normalised float32 embeddings [N, D], comparable with the photos'."""

    def pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels [N, 3, S, S] (decoded by `turkclip.data.images.load_image`) → L2-normalised float32 [N, D]."""


def check_queries(texts: list[str]) -> list[str]:
    """The texts, stripped; an empty one is a user error (it would match every photo equally badly)."""
    texts = [t.strip() for t in texts]
    if not texts or not all(texts):
        raise TurkclipError("a query is empty: type a few words to search for")
    return texts


def encode_photo(encoder: Encoder, photo) -> np.ndarray:
    """One photo (a path or an open binary file) → its L2-normalised float32 embedding [1, D].

    Decoded by the project's decoder (`load_image`); anything PIL cannot read is a `TurkclipError`.
    """
    from PIL import UnidentifiedImageError

    from turkclip.data.images import DECODE_ERRORS, load_image

    try:
        pixels = load_image(photo, encoder.image_size)[None]
    except DECODE_ERRORS as e:
        name = getattr(photo, "name", photo)
        why = "not a photo format PIL reads" if isinstance(e, UnidentifiedImageError) else f"{type(e).__name__}: {e}"
        raise TurkclipError(f"cannot read {name} as an image ({why.splitlines()[0]})") from None
    return encoder.pixels(pixels)


def refuse_model_flags(*flags) -> None:
    """An ONNX export carries its own model: a model, adapter, text model or tokenizer beside it is a mistake."""
    if any(flags):
        raise TurkclipError("an --onnx folder carries its own model: leave out --model, --adapter, --text-model and"
                            " --tokenizer")


def open_encoder(model: str | None = None, adapter: str | None = None, text_model: str | None = None,
                 tokenizer: str | None = None, device=None, precision: str = "fp32",
                 onnx: str | Path | None = None) -> Encoder:
    """The ONNX export in `onnx` (no torch imported), or else the torch model `model` with its road."""
    if onnx is not None:
        refuse_model_flags(model, adapter, text_model, tokenizer)
        from turkclip.onnx.runtime import OnnxEncoder

        return OnnxEncoder(onnx)
    from turkclip.search.torch_encoder import TorchEncoder

    return TorchEncoder.load(model, adapter, text_model, tokenizer, device, precision)
