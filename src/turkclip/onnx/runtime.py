"""The search `Encoder` on an ONNX export: onnxruntime + tokenizers + numpy + Pillow, no torch.

Captions are prepared as turkclip prepares them on torch: for CLIP's own text tower, `normalize` (NFC,
whitespace, the manifest's case folds: Turkish I → ı, İ → i) before the tokenizer's own lower-casing; for a text
tower, its prompt ("query: ") before the raw text. Photos are decoded by the same `load_image` (Pillow) and
normalised by `Preprocess.normalize_array`, bit for bit what torch gets. Each ONNX session (and the tokenizer) is
opened on first use: a text query never loads the image tower, an image query never loads the text side.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from turkclip.data.images import Preprocess
from turkclip.errors import TurkclipError
from turkclip.models.text import normalize
from turkclip.onnx.manifest import read_manifest
from turkclip.search.encoder import check_queries

TEXT_BATCH = 256
IMAGE_BATCH = 32  # float32 pixels of 32 images at 224 px: 19 MB


class OnnxEncoder:
    def __init__(self, folder: str | Path):
        self.export = read_manifest(folder)
        self.folder = self.export.folder
        self.model, self.adapter, self.text_model = self.export.model, self.export.adapter, self.export.text_model
        self.dim, self.logit_scale, self.lang = self.export.dim, self.export.logit_scale, self.export.lang
        self.cased = not self.export.text["clip_normalize"]
        image = self.export.image
        self.preprocess = Preprocess(size=image["size"], mean=tuple(image["mean"]), std=tuple(image["std"]))
        self.image_size = self.preprocess.size

    def texts(self, texts: list[str], lang: str = "tr") -> np.ndarray:
        texts = check_queries(texts)
        return np.concatenate([self._text_session.run(None, self.tokens(texts[s : s + TEXT_BATCH], lang))[0]
                               for s in range(0, len(texts), TEXT_BATCH)])

    def tokens(self, texts: list[str], lang: str = "tr") -> dict[str, np.ndarray]:
        """The text graph's inputs for `texts`: what turkclip's TextEncoder (or a tower's TowerText) gives on torch."""
        encoded = self._tokenizer.encode_batch([self._prepare(t, lang) for t in texts])
        return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}

    def pixels(self, pixels: np.ndarray) -> np.ndarray:
        starts = range(0, len(pixels), IMAGE_BATCH)
        batches = (self.preprocess.normalize_array(pixels[s : s + IMAGE_BATCH]) for s in starts)
        return np.concatenate([self._image_session.run(None, {"pixel_values": batch})[0] for batch in batches])

    def _prepare(self, text: str, lang: str) -> str:
        """What turkclip's text path does before tokenizing (TextEncoder for CLIP's tower, TowerText for a tower)."""
        if self.export.text["clip_normalize"]:
            return normalize(text, lang, self.export.text["case_folds"])
        return self.export.text["prompt"] + text

    @cached_property
    def _tokenizer(self):
        from tokenizers import Tokenizer

        path, text = self.export.path("text", "tokenizer"), self.export.text
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception for a file it cannot parse
            raise TurkclipError(f"{path} is not a usable tokenizer ({str(e).splitlines()[0]}): export the model"
                                " again") from None
        tokenizer.enable_truncation(text["max_length"], direction=text.get("truncation_side", "right"))
        tokenizer.enable_padding(direction=text.get("padding_side", "right"), pad_id=text["pad_id"],
                                 pad_token=text["pad_token"])
        return tokenizer

    @cached_property
    def _text_session(self):
        return _session(self.export.path("text"))

    @cached_property
    def _image_session(self):
        return _session(self.export.path("image"))


def _session(path: Path):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
        raise TurkclipError(f"{path} is not a usable ONNX model ({str(e).splitlines()[0]}): export the model"
                            " again") from None
