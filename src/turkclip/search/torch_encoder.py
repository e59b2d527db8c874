"""The torch `Encoder` (see encoder.py): a base CLIP with its road (an adapter or a swapped text tower) on torch.

Texts go through the road's own text path (`embed_texts`: Turkish case folding for CLIP's tokenizer, a text
tower's "query: " prompt) and photos through `embed_images`, exactly as evaluation embeds them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from turkclip.embedding.embed import embed_images, embed_texts
from turkclip.models.clip import DEFAULT_MODEL, Clip
from turkclip.models.text import TextEncoder
from turkclip.search.encoder import check_queries


class TorchEncoder:
    def __init__(self, clip: Clip, device: torch.device | str | None = "cpu", precision: str = "fp32"):
        self.clip, self.precision = clip, precision
        self.device = torch.device(device or "cpu")
        self.model = clip.model.to(self.device).eval()
        self.dim = self.model.config.projection_dim
        self.image_size = clip.preprocess.size
        self.logit_scale = float(self.model.logit_scale.detach().exp())
        self.lang = None  # turkclip.search.language reads it from the index's road
        self.cased = not isinstance(clip.text, TextEncoder)

    @classmethod
    def load(cls, model: str | None, adapter: str | None = None, text_model: str | None = None,
             tokenizer: str | None = None, device: torch.device | str | None = "cpu",
             precision: str = "fp32") -> TorchEncoder:
        from turkclip.roads import load_clip

        return cls(load_clip(model or DEFAULT_MODEL, tokenizer, text_model=text_model, adapter=adapter), device,
                   precision)

    def texts(self, texts: list[str], lang: str = "tr") -> np.ndarray:
        texts = check_queries(texts)
        return F.normalize(embed_texts(self.model, self.clip.text, texts, lang, self.device, self.precision),
                           dim=-1).numpy()

    def pixels(self, pixels: np.ndarray) -> np.ndarray:
        embeddings = embed_images(self.model, torch.from_numpy(pixels), self.clip.preprocess, self.device,
                                  self.precision, progress=False)
        return F.normalize(embeddings, dim=-1).numpy()
