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
    lang: str | None  # the language its road was trained for, when it knows (an export records it); None: ask the index
    cased: bool  # its text side reads case (a swapped text tower: no Turkish folding, Kedi ≠ kedi)

    def texts(self, texts: list[str], lang: str = "tr") -> np.ndarray:
        """Captions or queries → L2-normalised float32 embeddings [N, D], comparable with the photos'."""

    def pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels [N, 3, S, S] (decoded by `turkclip.data.images.load_image`) → L2-normalised float32 [N, D]."""


def check_queries(texts: list[str]) -> list[str]:
    """The texts, stripped; a blank one (or none) is a user error: it would match every photo equally badly."""
    from turkclip.search.texts import check_text

    if not texts:
        raise TurkclipError("a query is empty: type a few words to search for")
    return [check_text(t, "a query") for t in texts]


def photo_pixels(photo, size: int) -> np.ndarray:
    """One photo (a path or an open binary file) → uint8 pixels [1, 3, size, size], decoded by the project's decoder
    (`load_image`, which bounds the pixels it decodes); anything it cannot or will not read is a `TurkclipError`.
    Kept apart from `encoder.pixels` so that a server decodes an upload without holding the model."""
    from turkclip.data.images import DECODE_ERRORS, describe, load_image

    try:
        return load_image(photo, size)[None]
    except DECODE_ERRORS as e:
        raise TurkclipError(f"{getattr(photo, 'name', photo)}: {describe(e)}") from None


def encode_photo(encoder: Encoder, photo) -> np.ndarray:
    """One photo (a path or an open binary file) → its L2-normalised float32 embedding [1, D]."""
    return encoder.pixels(photo_pixels(photo, encoder.image_size))


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
