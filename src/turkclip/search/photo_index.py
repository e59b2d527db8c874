"""A photo index: one unit-length embedding per photo of a folder, built, updated and opened.

Layout of an index folder:

    photo-index.safetensors   the index: "embeddings" float16 [N, D] (unit length), the photos'
                              paths ("paths": NUL-separated UTF-8), "sizes" and "mtimes" (int64),
                              and JSON metadata: folder, model, adapter, text_model, generation,
                              unreadable files
    chunks/                   while `build_index` runs: embeddings of the photos done so far,
                              a chunk file per `chunk_size` photos, each written atomically

A run killed at any moment (even SIGKILL) loses at most the chunk it was embedding: the next
run reads the finished chunks and embeds only what is missing. When a run finishes, the chunks
are folded into a new `photo-index.safetensors` (atomically; its `generation` goes up by one,
so chunks left from an older generation are never mixed in) and deleted. Updating is
incremental: photos whose size and mtime are unchanged keep their embedding, new and changed
ones are embedded, deleted ones are dropped.

float16 on disk halves the size (1 KiB per photo at D=512) and costs nothing measurable in
ranking; `open_index` returns float32 for search.

Under several processes (torchrun) every process plans the same work from the folder (they check that they
agree), decodes and embeds its share of each chunk (`shard`), and receives the whole chunk's embeddings;
rank 0 alone writes the chunk files and the index. A chunk is still the unit of saving, so resuming after a
kill works as with one process, with any number of processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from turkclip.atomic import atomic_path
from turkclip.data.images import load_images
from turkclip.embedding import shard
from turkclip.errors import TurkclipError
from turkclip.search.photo_files import PHOTO_SUFFIXES, PhotoFile, scan_photos

INDEX_FILE = "photo-index.safetensors"
VERSION = 1
_TEST_CHUNK_DELAY = float(os.environ.get("TURKCLIP_TEST_INDEX_DELAY", "0"))  # tests: time to SIGKILL mid-run


@dataclass
class PhotoIndex:
    root: Path  # the indexed folder
    paths: list[str]  # relative to root, sorted
    embeddings: np.ndarray  # float32 [N, D], unit length
    model: str
    adapter: str | None
    text_model: str | None  # a swapped text tower, if queries use one (None: the model's own)
    tokenizer: str | None  # --tokenizer it was built with, if the model folder has none
    precision: str
    generation: int
    folder: Path  # the index folder
    bad: list[list] = field(default_factory=list)  # [path, size, mtime_ns, problem]
    onnx: str | None = None  # the `turkclip export-onnx` folder it was built with: searched without torch

    def row(self, path: str) -> int | None:
        if not hasattr(self, "_rows"):
            self._rows = {p: i for i, p in enumerate(self.paths)}
        return self._rows.get(path)


@dataclass
class IndexReport:
    index: PhotoIndex | None = None  # the finished index (set when the run ends)
    added: int = 0
    changed: int = 0
    removed: int = 0
    kept: int = 0
    resumed: int = 0  # embeddings found in chunks of an interrupted run
    bad: list[list] = field(default_factory=list)  # unreadable files: [path, size, mtime_ns, problem]
    seconds: float = 0.0


def model_id(name: str | None) -> str | None:
    """How a model or adapter is recorded: a local folder as its absolute path, a hub id as is."""
    if name is None:
        return None
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def check_model(index: PhotoIndex, model: str | None, adapter: str | None, text_model: str | None = None) -> None:
    """Refuse to mix embeddings of two models in one index or one search. (A text tower only changes the queries:
    any tower aligned to the index's model may search it; `swap_text_tower` checks the alignment.)"""
    if text_model is not None and index.adapter:
        raise TurkclipError(f"index {index.folder} was built with adapter {index.adapter}: its photos are embedded for"
                            " that adapter, not for a --text-model; index the folder again into a new --output")
    if model is not None and model_id(model) != index.model:
        raise TurkclipError(f"index {index.folder} was built with model {index.model}, not {model}: search it with"
                            " that model (leave out --model), or index the folder again into a new --output")
    if adapter is not None and model_id(adapter) != index.adapter:
        raise TurkclipError(f"index {index.folder} was built with adapter {index.adapter}, not {adapter}: leave out"
                            " --adapter, or index the folder again into a new --output")


def open_index(folder: str | Path) -> PhotoIndex:
    """Read a finished index (what `search` and `serve` use)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TurkclipError(f"index folder not found: {folder}")
    if not (folder / INDEX_FILE).is_file():
        if (folder / "chunks").is_dir():
            raise TurkclipError(f"index {folder} is unfinished (its indexing run was interrupted): run"
                                " `turkclip index` on the photo folder again to finish it")
        raise TurkclipError(f"{folder} is not a photo index: it has no {INDEX_FILE} (make one with `turkclip index`)")
    return _index_from(*_read(folder / INDEX_FILE), folder)


def built_with_onnx(folder: Path) -> str | None:
    """The ONNX export a finished index in `folder` was built with (None: torch, or no index there); reads only the
    index file's header."""
    try:
        with safe_open(folder / INDEX_FILE, "np") as f:
            return json.loads((f.metadata() or {}).get("turkclip", "{}")).get("onnx")
    except (OSError, SafetensorError, ValueError, AttributeError):  # no index, or a damaged one: build_index says which
        return None


def _index_from(tensors: dict[str, np.ndarray], meta: dict, folder: Path) -> PhotoIndex:
    if meta.get("format") != "turkclip-photo-index" or meta.get("version") != VERSION:
        raise TurkclipError(f"{folder / INDEX_FILE} is not a turkclip photo index (version {VERSION})")
    paths = _unpack_paths(tensors["paths"])
    return PhotoIndex(root=Path(meta["root"]), paths=paths, embeddings=tensors["embeddings"].astype(np.float32),
                      model=meta["model"], adapter=meta["adapter"], text_model=meta.get("text_model"),
                      tokenizer=meta.get("tokenizer"), precision=meta["precision"], generation=meta["generation"],
                      folder=folder, bad=meta["bad"], onnx=meta.get("onnx"))


def build_index(photos: str | Path, output: str | Path, model: str | None = None, adapter: str | None = None,
                tokenizer: str | None = None, device=None, precision: str = "fp32", chunk_size: int = 256,
                progress: bool = True, text_model: str | None = None, onnx: str | Path | None = None) -> IndexReport:
    """Index every photo under `photos` into `output`, or bring an existing index up to date.

    The photos are embedded by `model` with its `adapter` on torch (`device`, default the CPU, in `precision`), or
    by the `turkclip export-onnx` folder `onnx` without torch; an update without either uses what built the index.
    """
    start = time.perf_counter()
    root, output = Path(photos), Path(output)
    if not root.is_dir():
        raise TurkclipError(f"photo folder not found: {root}")
    root = root.resolve()
    old = _read_state(output)  # what the folder already holds, from earlier (maybe interrupted) runs
    if old["root"] is not None and Path(old["root"]) != root:
        raise TurkclipError(f"{output} indexes {old['root']}, not {root}: choose another --output")
    if onnx is None and model is None and adapter is None and text_model is None:
        onnx = old["onnx"]
    if onnx is not None:  # the export says which model and road it holds
        model, adapter, text_model, precision = _exported(onnx, model, adapter, text_model, tokenizer)
    name = model_id(model) or old["model"]
    if adapter and text_model:
        raise TurkclipError("give --adapter or --text-model, not both (two roads to the same goal)")
    same_adapter = model_id(adapter) == old["adapter"] or (adapter is None and onnx is None)  # None: the index's
    if old["model"] is not None and (name != old["model"] or not same_adapter):
        raise TurkclipError(f"{output} was built with model {old['model']} (adapter {old['adapter']}); re-index it"
                            " with the same model (leave out --model/--adapter) or choose another --output")
    if name is None:  # a new index without --model (imported here: an update needs no transformers)
        from turkclip.models.clip import DEFAULT_MODEL

        name = DEFAULT_MODEL
    fresh = old["model"] is None
    meta = {"format": "turkclip-photo-index", "version": VERSION, "root": str(root), "model": name,
            "adapter": model_id(adapter) if fresh else old["adapter"],
            "tokenizer": model_id(tokenizer) if fresh else old["tokenizer"],
            # the text tower that queries go through (photos are embedded by the base's image tower either way)
            "text_model": model_id(text_model) if text_model else old["text_model"],
            "precision": precision if fresh else old["precision"], "generation": old["generation"],
            "onnx": model_id(onnx) if onnx else old["onnx"]}

    files = scan_photos(root, exclude=output)
    if not files:
        raise TurkclipError(f"no photos ({' '.join(PHOTO_SUFFIXES)}) under {root}")
    report = IndexReport()
    entries = {}  # path -> (stamp, embedding) of photos whose embedding is still valid
    for f in files:
        hit = old["entries"].get(f.path)
        if hit is not None and hit[0] == f.stamp:
            entries[f.path] = hit
    report.resumed = sum(1 for p in entries if p in old["pending"])
    report.kept = len(entries) - report.resumed
    present = {f.path for f in files}
    report.removed = len([p for p in old["indexed"] if p not in present])
    stamps = {f.path: f.stamp for f in files}
    known_bad = {b[0]: b for b in old["bad"] if (b[1], b[2]) == stamps.get(b[0])}
    todo = [f for f in files if f.path not in entries and f.path not in known_bad]
    report.added = sum(1 for f in todo if f.path not in old["indexed"])
    report.changed = len(todo) - report.added
    bad = list(known_bad.values())
    done = _chunks_done(output, meta["generation"])
    _check_same_plan(todo, meta, done)

    if todo:
        bad += _embed_chunks(todo, root, output, meta, entries, device, chunk_size, progress, done, onnx)
    report.bad = sorted(bad)
    rows = [p for p in sorted(entries) if p in present]
    if not rows:
        raise TurkclipError(f"none of the {len(files)} photos under {root} could be read"
                            f" (first: {bad[0][0]}: {bad[0][3]})")
    unchanged = (not todo and not report.removed and not old["pending"] and old["generation"] > 0
                 and len(bad) == len(old["bad"]))
    if not unchanged:
        meta["generation"] += 1
        meta["bad"] = report.bad
        shard.once(lambda: _write_index(output, rows, entries, meta))  # rank 0 writes; the others wait for it
    report.index = old["index"] if unchanged else open_index(output)
    report.seconds = time.perf_counter() - start
    return report


def _exported(onnx, model, adapter, text_model, tokenizer) -> tuple:
    """(model, adapter, text_model, precision) of the ONNX export `onnx`, which no flag may contradict."""
    from turkclip.onnx.manifest import read_manifest
    from turkclip.search.encoder import refuse_model_flags

    refuse_model_flags(model, adapter, text_model, tokenizer)
    export = read_manifest(onnx)
    return export.model, export.adapter, export.text_model, "fp32"  # int8 weights still compute in fp32


def _chunks_done(output: Path, generation: int) -> int:
    """How many chunks of this generation an interrupted run left (the next chunk's number)."""
    chunks = output / "chunks"
    return len(list(chunks.glob(f"chunk-g{generation}-*.safetensors"))) if chunks.is_dir() else 0


def _check_same_plan(todo: list[PhotoFile], meta: dict, done: int) -> None:
    """Several processes: each scanned the folder itself; a photo added or changed between their scans would
    split the chunks differently, so they compare what they are about to do and refuse if it differs."""
    if shard.rank_and_world()[1] == 1:
        return
    plan = hashlib.sha256(json.dumps([[f.path, f.stamp] for f in todo] + [meta, done], default=str).encode())
    if len(set(shard.gather_objects(plan.hexdigest()))) > 1:
        raise TurkclipError(f"the photos under {meta['root']} changed while the processes were scanning them;"
                            " run the same command again")


def _embed_chunks(todo, root, output, meta, entries, device, chunk_size, progress, done, onnx) -> list[list]:
    """Embed `todo` a chunk at a time, saving each chunk before the next; returns the unreadable files.
    Several processes: each decodes and embeds its share of a chunk, all receive the chunk, rank 0 saves it."""
    from turkclip.search.encoder import open_encoder

    if onnx is not None:
        encoder = open_encoder(onnx=onnx)
    else:  # photos go through the base's image tower (with the adapter's LoRA): a text tower plays no part
        encoder = open_encoder(meta["model"], meta["adapter"], None, meta["tokenizer"], device, meta["precision"])
    rank, world = shard.rank_and_world()
    bad = []
    bar = tqdm(total=len(todo), desc="indexing photos", unit="photo",
               disable=None if progress and rank == 0 else True)
    parts = [todo[start : start + chunk_size] for start in range(0, len(todo), chunk_size)]
    mine = [part[shard.share(len(part), rank, world)] for part in parts]  # this process's share of each chunk
    # the next share is decoded (PIL, threads) while this one is embedded: both cores stay busy
    prefetch = ThreadPoolExecutor(1)
    decoding = prefetch.submit(_decode, root, [f.path for f in mine[0]], encoder.image_size)
    for n, part in enumerate(parts, start=done):
        pixels, kept, problems = decoding.result()
        if n - done + 1 < len(parts):
            decoding = prefetch.submit(_decode, root, [f.path for f in mine[n - done + 1]], encoder.image_size)
        emb = encoder.pixels(pixels) if kept else None
        emb = shard.gather_arrays(emb).astype(np.float16)  # every share's rows, in the chunk's order
        shares = shard.gather_objects(([mine[n - done][i].path for i in kept], problems))
        by_name = {f.path: f for f in part}
        ok = [by_name[name] for names, _ in shares for name in names]
        bad_rows = [[name, by_name[name].size, by_name[name].mtime_ns, problem]
                    for _, share_problems in shares for name, problem in share_problems]
        # rank 0 saves the chunk (an error there, e.g. a full disk, is raised on every process)
        shard.once(lambda: _save_chunk(output / "chunks", f"g{meta['generation']}-{n:06d}", ok, emb, bad_rows, meta))
        for f, e in zip(ok, emb):
            entries[f.path] = (f.stamp, e)
        bad += bad_rows
        bar.update(len(part))
        if _TEST_CHUNK_DELAY:
            time.sleep(_TEST_CHUNK_DELAY)
    bar.close()
    prefetch.shutdown()
    return bad


def _decode(root: Path, names: list[str], size: int):
    """The project's decoder on one chunk (or a process's share of it, maybe empty): (pixels or None, indices that
    loaded, [(name, problem)])."""
    return load_images(root, names, size, workers=min(4, os.cpu_count() or 1))


# ---- reading and writing the files -------------------------------------------------------------

def _read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with safe_open(path, "np") as f:
            meta = json.loads((f.metadata() or {}).get("turkclip", "{}"))
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as e:  # a damaged file: safetensors and json raise several types
        raise TurkclipError(f"{path} is damaged ({str(e).splitlines()[0]}); delete the index folder and index again") from None


def _pack_paths(paths: list[str]) -> np.ndarray:
    return np.frombuffer("\0".join(paths).encode("utf-8") or b"\0", dtype=np.uint8)


def _unpack_paths(packed: np.ndarray) -> list[str]:
    text = packed.tobytes().decode("utf-8")
    return text.split("\0") if text.strip("\0") else []


def _save_chunk(chunks: Path, key: str, ok: list[PhotoFile], emb: np.ndarray, bad_rows: list, meta: dict) -> None:
    arrays = {"embeddings": emb, "paths": _pack_paths([f.path for f in ok]),
              "sizes": np.array([f.size for f in ok], dtype=np.int64),
              "mtimes": np.array([f.mtime_ns for f in ok], dtype=np.int64)}
    _save(chunks / f"chunk-{key}.safetensors", arrays, dict(meta, bad=bad_rows))


def _write_index(output: Path, rows: list[str], entries: dict, meta: dict) -> None:
    arrays = {"embeddings": np.stack([entries[p][1] for p in rows]).astype(np.float16), "paths": _pack_paths(rows),
              "sizes": np.array([entries[p][0][0] for p in rows], dtype=np.int64),
              "mtimes": np.array([entries[p][0][1] for p in rows], dtype=np.int64)}
    _save(output / INDEX_FILE, arrays, meta)  # atomic: the old index or the new one, never half
    for chunk in (output / "chunks").glob("*.safetensors") if (output / "chunks").is_dir() else []:
        chunk.unlink()
    if (output / "chunks").is_dir():
        (output / "chunks").rmdir()


def _save(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata={"turkclip": json.dumps(meta)})


def _read_state(output: Path) -> dict:
    """Everything an update starts from: the finished index (if any) plus chunks of an interrupted run."""
    state = {"root": None, "model": None, "adapter": None, "text_model": None, "tokenizer": None, "precision": None,
             "generation": 0, "entries": {}, "indexed": set(), "pending": set(), "bad": [], "index": None,
             "onnx": None}
    if output.exists() and not output.is_dir():
        raise TurkclipError(f"--output {output} is a file, not an index folder")
    if not output.is_dir():
        return state
    if (output / INDEX_FILE).is_file():
        tensors, meta = _read(output / INDEX_FILE)  # read once: the index, and the entries an update keeps
        index = _index_from(tensors, meta, output)
        state.update(index=index, root=str(index.root), model=index.model, adapter=index.adapter, text_model=index.text_model,
                     tokenizer=index.tokenizer, precision=index.precision, onnx=index.onnx,
                     generation=index.generation, bad=list(index.bad), indexed=set(index.paths))
        _add_entries(state["entries"], tensors)
    elif any(p.name != "chunks" for p in output.iterdir()):
        raise TurkclipError(f"--output {output} is a folder that is not a photo index: choose an empty or new folder")
    chunks = sorted((output / "chunks").glob(f"chunk-g{state['generation']}-*.safetensors")) \
        if (output / "chunks").is_dir() else []
    for chunk in chunks:
        tensors, meta = _read(chunk)
        if state["model"] is None:
            state.update({k: meta[k] for k in ("root", "model", "adapter", "tokenizer", "precision")},
                         text_model=meta.get("text_model"), onnx=meta.get("onnx"))
        state["pending"] |= set(_add_entries(state["entries"], tensors))
        state["bad"] = [b for b in state["bad"] if b[0] not in state["pending"]] + meta["bad"]
    return state


def _add_entries(entries: dict, tensors: dict) -> list[str]:
    paths = _unpack_paths(tensors["paths"])
    for p, size, mtime, emb in zip(paths, tensors["sizes"].tolist(), tensors["mtimes"].tolist(), tensors["embeddings"]):
        entries[p] = ((size, mtime), emb)
    return paths
