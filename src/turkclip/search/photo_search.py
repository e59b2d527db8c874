"""Nearest photos to a query embedding: exact for small galleries, FAISS for large ones.

All embeddings are unit length, so cosine similarity is an inner product. Exact search is one
matrix product over the gallery and a partial sort: no build, no approximation, and on this
project's 2-core CPU (bench/search_bench.py, one thread) a query takes ~1 ms at 10k photos,
~41 ms at 100k and ~490 ms at 1M. From `FAISS_FROM` photos on, a server (many queries) uses an
inverted-file FAISS index instead (IVF-Flat, inner product, sqrt(N) lists, `NPROBE` visited):
~6 ms at 100k and ~22 ms at 1M with recall@10 >= 0.99 against exact on the bench's clustered
synthetic vectors, for a one-off build (10 s at 100k, ~3.5 min at 1M on that loaded machine), saved in the index
folder so the next server start reads it instead. The saved file is named by a fingerprint of the vectors it was
built from and a checksum of its own bytes (`faiss-ivf-<vectors>-<file>.index`): a file built from other vectors is
never used, and a damaged one is rebuilt. When the file cannot be read or written (a damaged file, a read-only or
full index folder) the index is built in memory and the server starts anyway, with a note.
A single query from the command line always searches exactly: one pass costs less than a build.

Memory: 2 GiB per million photos for the float32 gallery, plus 2 GiB for IVF-Flat's own copy.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from turkclip.errors import TurkclipError
from turkclip.models.clip import Clip
from turkclip.search.photo_index import PhotoIndex, check_model

FAISS_FROM = 100_000  # photos; below this exact search wins (see the module docstring)
NPROBE = 32  # IVF lists visited per query (bench/search_bench.py: recall@10 vs latency)
TRAIN_PER_LIST = 40  # k-means training points per IVF list (FAISS warns below 39)


class Searcher:
    """Top-k inner-product search over fixed float32 unit vectors [N, D]."""

    def __init__(self, embeddings: torch.Tensor, use_faiss: bool | None = None, nprobe: int = NPROBE,
                 saved_in: Path | None = None):
        """saved_in: a folder to keep the built FAISS index in (read back next time instead of rebuilding)."""
        self.vectors = np.ascontiguousarray(embeddings.float().numpy())
        self.n = len(self.vectors)
        if use_faiss is None:  # auto: FAISS for large galleries, when it is installed
            use_faiss = self.n >= FAISS_FROM and _have_faiss()
        self.index = None
        if use_faiss and self.n:
            key = _vectors_key(self.vectors)
            self.index = _load_ivf(saved_in, key, self.vectors.shape) if saved_in is not None else None
            if self.index is None:
                self.index = build_ivf(self.vectors, nprobe)
                if saved_in is not None:
                    _save_ivf(self.index, saved_in, key)
            self.index.nprobe = min(nprobe, self.index.nlist)
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


def _have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        import sys

        print(f"note: searching exactly (slower above {FAISS_FROM:,} photos): pip install faiss-cpu for FAISS", file=sys.stderr)
        return False
    return True


def _vectors_key(vectors: np.ndarray) -> str:
    """Names the FAISS file built from exactly these vectors with these build settings."""
    h = hashlib.sha256(f"ivf-flat {TRAIN_PER_LIST} {vectors.shape}".encode())
    h.update(vectors.view(np.uint8))
    return h.hexdigest()[:32]


def _load_ivf(folder: Path, key: str, shape: tuple[int, int]):
    """The FAISS index saved for these vectors, or None (none saved; a damaged or foreign file is noted)."""
    import faiss

    for path in sorted(p for p in folder.glob(f"faiss-ivf-{key}-*.index") if p.is_file()):
        try:
            with path.open("rb") as f:
                intact = hashlib.file_digest(f, "sha256").hexdigest()[:16] == path.stem.rsplit("-", 1)[1]
            index = faiss.read_index(str(path)) if intact else None
        except (OSError, RuntimeError):  # unreadable; FAISS raises RuntimeError on a file it cannot parse
            index = None
        if (isinstance(index, faiss.IndexIVFFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT
                and (index.ntotal, index.d) == shape):
            return index
        print(f"note: {path} is damaged: the FAISS index is built again", file=sys.stderr)
    return None


def _save_ivf(index, folder: Path, key: str) -> None:
    """Beside the photo index, named by the vectors' key and its own checksum; files for other vectors are
    removed. A folder that cannot take it (read-only, full) only costs a rebuild at the next start."""
    import faiss

    tmp = folder / f".faiss-ivf-{key}.tmp"
    try:
        faiss.write_index(index, str(tmp))
        with tmp.open("rb") as f:
            path = folder / f"faiss-ivf-{key}-{hashlib.file_digest(f, 'sha256').hexdigest()[:16]}.index"
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # FAISS raises RuntimeError when it cannot write
        print(f"note: could not save the FAISS index in {folder} ({(str(e).splitlines() or [type(e).__name__])[-1]}):"
              " it is kept in memory and built again at the next start", file=sys.stderr)
        tmp.unlink(missing_ok=True)
        return
    for old in folder.glob("faiss-ivf-*.index"):
        if old != path:
            old.unlink(missing_ok=True)


def build_ivf(vectors: np.ndarray, nprobe: int = NPROBE):
    """An IVF-Flat inner-product index: sqrt(N) k-means lists, trained on TRAIN_PER_LIST points per list."""
    try:
        import faiss
    except ImportError:
        raise TurkclipError("searching this many photos needs FAISS: pip install faiss-cpu (or turkclip[app])") from None
    n, dim = vectors.shape
    nlist = max(1, min(int(math.sqrt(n)), n // TRAIN_PER_LIST))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    per = TRAIN_PER_LIST * nlist
    sample = vectors if n <= per else vectors[np.sort(np.random.default_rng(0).choice(n, per, replace=False))]
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
        self.searcher = Searcher(index.embeddings, use_faiss, saved_in=index.folder)
        self.model_lock = threading.Lock()  # one forward pass at a time: threads would fight over the cores

    def text(self, query: str, k: int = 10, lang: str = "tr") -> list[Hit]:
        from turkclip.search import queries

        with self.model_lock:
            q = queries.encode_queries(self.clip, [query], lang, self.device, self.index.precision)
        return self._hits(q, k)

    def photo(self, photo, k: int = 10) -> list[Hit]:
        """Photos like `photo` (a path or an open binary file)."""
        from turkclip.search import queries

        return self.like_pixels(queries.photo_pixels(self.clip, photo), k)

    def like_pixels(self, pixels: torch.Tensor, k: int = 10) -> list[Hit]:
        """Photos like a decoded photo (`queries.photo_pixels`): a server decodes uploads before it waits for the
        model, so no one else waits for a decode."""
        from turkclip.search import queries

        with self.model_lock:
            q = queries.encode_pixels(self.clip, pixels, self.device, self.index.precision)
        return self._hits(q, k)

    def rank_captions(self, pixels: torch.Tensor, captions: list[str], lang: str = "tr") -> list[tuple[str, float]]:
        """A decoded photo's probability for each caption (as written: no templates), most likely first."""
        from turkclip.search import queries
        from turkclip.search.classify import AS_IS, label_embeddings, rank

        with self.model_lock:
            targets = label_embeddings(self.clip, captions, AS_IS, lang, self.device, self.index.precision)
            image = queries.encode_pixels(self.clip, pixels, self.device, self.index.precision)
        return rank(self.clip, captions, targets, image)

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
                tokenizer: str | None = None, device: torch.device | str = "cpu",
                use_faiss: bool | None = None, text_model: str | None = None) -> PhotoSearch:
    """Load the model `index` was built with (refusing another one) and get ready to search.

    use_faiss: None = from FAISS_FROM photos on (a server answering many queries); False for a
    single query, where building the FAISS index would cost more than one exact pass."""
    from turkclip.roads import load_clip

    check_model(index, model, adapter, text_model)
    clip = load_clip(index.model, tokenizer or index.tokenizer, adapter=index.adapter,
                     text_model=text_model or index.text_model)
    clip.model.eval()
    width = clip.model.config.projection_dim if hasattr(clip.model.config, "projection_dim") else None
    if width is not None and index.embeddings.shape[1] != width:
        raise TurkclipError(f"index {index.folder} holds {index.embeddings.shape[1]}-dim embeddings but"
                            f" {index.model} makes {width}-dim ones: it was built with another model")
    return PhotoSearch(index, clip, device, use_faiss)
