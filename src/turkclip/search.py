"""Nearest photos to a query embedding: exact for small galleries, FAISS for large ones.

All embeddings are unit length, so cosine similarity is an inner product. Below `FAISS_FROM`
photos one matrix product over the whole gallery is exact and fast enough (bench/search_bench.py:
the measured crossover, table in bench/RESULTS_search.md); from there on an inverted-file FAISS
index (IVF-Flat, inner product) answers in a fraction of the time with recall@10 >= 0.95
against exact search at the `nprobe` chosen there.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from .errors import TurkclipError
from .model import Clip
from .photo_index import PhotoIndex, check_model

FAISS_FROM = 200_000  # photos; below this exact search wins (see the module docstring)
NPROBE = 32  # IVF lists visited per query (bench/search_bench.py: recall@10 vs latency)


class Searcher:
    """Top-k inner-product search over fixed float32 unit vectors [N, D]."""

    def __init__(self, embeddings: torch.Tensor, use_faiss: bool | None = None, nprobe: int = NPROBE):
        self.vectors = np.ascontiguousarray(embeddings.float().numpy())
        self.n = len(self.vectors)
        if use_faiss is None:
            use_faiss = self.n >= FAISS_FROM
        self.index = build_ivf(self.vectors, nprobe) if use_faiss and self.n else None
        self._lock = threading.Lock()  # FAISS search is thread-safe, but numpy's BLAS pool should not be oversubscribed

    @property
    def kind(self) -> str:
        return "faiss-ivf" if self.index is not None else "exact"

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k], rows [Q, k]) best first; k is capped at the gallery size."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.vectors.shape[1]))
        k = max(0, min(k, self.n))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        with self._lock:
            if self.index is not None:
                return self.index.search(q, k)
            scores = q @ self.vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top, order, axis=1)


def build_ivf(vectors: np.ndarray, nprobe: int = NPROBE):
    """An IVF-Flat inner-product index: ~4·sqrt(N) k-means lists, trained on up to 64 points per list."""
    try:
        import faiss
    except ImportError:
        raise TurkclipError("searching this many photos needs FAISS: pip install faiss-cpu (or turkclip[app])") from None
    n, dim = vectors.shape
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = vectors if n <= 64 * nlist else vectors[np.random.default_rng(0).choice(n, 64 * nlist, replace=False)]
    index.train(sample)
    index.add(vectors)
    index.nprobe = min(nprobe, nlist)
    return index


@dataclass
class Hit:
    path: str  # relative to the indexed folder
    score: float  # cosine similarity

    def as_dict(self) -> dict:
        return {"path": self.path, "score": round(self.score, 6)}


class PhotoSearch:
    """An opened index plus the model its queries must be embedded with."""

    def __init__(self, index: PhotoIndex, clip: Clip, device: torch.device | str = "cpu",
                 use_faiss: bool | None = None):
        self.index, self.clip, self.device = index, clip, torch.device(device)
        self.searcher = Searcher(index.embeddings, use_faiss)
        self.model_lock = threading.Lock()  # one forward pass at a time: threads would fight over the cores

    def text(self, query: str, k: int = 10, lang: str = "tr") -> list[Hit]:
        from . import queries

        with self.model_lock:
            q = queries.encode_queries(self.clip, [query], lang, self.device, self.index.precision)
        return self._hits(q, k)

    def photo(self, photo, k: int = 10) -> list[Hit]:
        """Photos like `photo` (a path or an open binary file)."""
        from . import queries

        with self.model_lock:
            q = queries.encode_photo(self.clip, photo, self.device, self.index.precision)
        return self._hits(q, k)

    def similar(self, path: str, k: int = 10) -> list[Hit]:
        """Photos like an indexed one (its stored embedding; itself left out)."""
        row = self.index.row(path)
        if row is None:
            raise TurkclipError(f"{path} is not in the index")
        return [h for h in self._hits(self.index.embeddings[row : row + 1], k + 1) if h.path != path][:k]

    def _hits(self, q: torch.Tensor, k: int) -> list[Hit]:
        if k < 1:
            raise TurkclipError(f"-k must be at least 1, not {k}")
        scores, rows = self.searcher.search(q, k)
        return [Hit(self.index.paths[r], float(s)) for s, r in zip(scores[0], rows[0]) if r >= 0]


def open_search(index: PhotoIndex, model: str | None = None, adapter: str | None = None,
                tokenizer: str | None = None, device: torch.device | str = "cpu") -> PhotoSearch:
    """Load the model `index` was built with (refusing another one) and get ready to search."""
    from .adapters import load_adapter
    from .model import load_clip

    check_model(index, model, adapter)
    clip = load_clip(index.model, tokenizer or index.tokenizer)
    if index.adapter:
        clip.model = load_adapter(clip.model, index.adapter)
    clip.model.eval()
    width = clip.model.config.projection_dim if hasattr(clip.model.config, "projection_dim") else None
    if width is not None and index.embeddings.shape[1] != width:
        raise TurkclipError(f"index {index.folder} holds {index.embeddings.shape[1]}-dim embeddings but"
                            f" {index.model} makes {width}-dim ones: it was built with another model")
    return PhotoSearch(index, clip, device)
