"""A photo index: one unit-length embedding per photo of a folder, built, updated and opened.

Layout of an index folder:

    photo-index.safetensors   the index: "embeddings" float16 [N, D] (unit length), the photos'
                              paths ("paths": NUL-separated UTF-8), "sizes" and "mtimes" (int64),
                              and JSON metadata: folder, model, adapter, text_model, generation,
                              unreadable files; with checksums over all of it (index_file.py)
    chunks/                   while `build_index` runs: embeddings of the photos done so far,
                              a chunk file per `chunk_size` photos, each written whole, with checksums
    .turkclip.lock            held by the one `turkclip index` run that may write the folder (writer_lock.py)

A run killed at any moment (even SIGKILL) loses at most the chunk it was embedding: the next
run reads the finished chunks and embeds only what is missing. When a run finishes, the chunks
are folded into a new `photo-index.safetensors` (atomically; its `generation` goes up by one,
so chunks left from an older generation are never mixed in) and deleted. Updating is
incremental: photos whose size and mtime are unchanged keep their embedding, new and changed
ones are embedded, deleted ones are dropped.

Nothing read back is trusted unchecked: `open_index` refuses a damaged index in one line, and an update
that finds its index or a chunk damaged embeds those photos again instead of keeping the damage. A second
run on the same folder waits for the first (briefly) or refuses; a write that fails (a full disk) is one line
and leaves the previous index whole.

float16 on disk halves the size (1 KiB per photo at D=512) and costs nothing measurable in
ranking; `open_index` returns float32 for search.

Under several processes (torchrun) every process plans the same work from the folder (they check that they
agree), decodes and embeds its share of each chunk (`shard`), and receives the whole chunk's embeddings;
rank 0 alone holds the lock and writes the chunk files and the index. A chunk is still the unit of saving, so
resuming after a kill works as with one process, with any number of processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from turkclip.data.images import load_images
from turkclip.embedding import shard
from turkclip.errors import TurkclipError
from turkclip.progress import bar as progress_bar
from turkclip.search import index_file
from turkclip.search.index_file import Damaged
from turkclip.search.photo_files import PHOTO_SUFFIXES, PhotoFile, printable, scan_photos
from turkclip.writer_lock import WriterLock

INDEX_FILE = "photo-index.safetensors"
LOCK_FILE = ".turkclip.lock"
VERSION = 2  # 2: checksums (index_file.py)
_CHUNK = re.compile(r"chunk-g(\d+)-(\d+)\.safetensors")
_KEPT = "the previous index is untouched; free some space (or fix the folder) and run the same command again"
_CHUNKS_KEPT = ("the chunks written so far are kept; free some space (or fix the folder) and run the same command"
                " again to go on from them")


@dataclass
class PhotoIndex:
    root: Path  # the indexed folder
    paths: list[str]  # relative to root, sorted
    embeddings: torch.Tensor  # float32 [N, D], unit length
    model: str
    adapter: str | None
    text_model: str | None  # a swapped text tower, if queries use one (None: the model's own)
    tokenizer: str | None  # --tokenizer it was built with, if the model folder has none
    precision: str
    generation: int
    folder: Path  # the index folder
    bad: list[list] = field(default_factory=list)  # [path, size, mtime_ns, problem]

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
    skipped: list[tuple[str, str]] = field(default_factory=list)  # left out by the scan: (path, why)
    repaired: list[str] = field(default_factory=list)  # damaged files found, and what was done about them
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
    """Read a finished index (what `search` and `serve` use), verified against its checksums."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TurkclipError(f"index folder not found: {folder}")
    if not (folder / INDEX_FILE).is_file():
        if (folder / "chunks").is_dir():
            raise TurkclipError(f"index {folder} is unfinished (its indexing run was interrupted): run"
                                " `turkclip index` on the photo folder again to finish it")
        raise TurkclipError(f"{folder} is not a photo index: it has no {INDEX_FILE} (make one with `turkclip index`)")
    try:
        return _index_from(*index_file.read(folder / INDEX_FILE), folder)
    except Damaged as e:
        photos = e.meta.get("root") if isinstance(e.meta, dict) and isinstance(e.meta.get("root"), str) else "PHOTOS"
        raise TurkclipError(f"{e}: run `turkclip index {photos} --output {folder}` to rebuild it") from None


def _index_from(tensors: dict[str, torch.Tensor], meta: dict, folder: Path) -> PhotoIndex:
    """The index a verified file holds, after checking that its parts fit together (a file with valid checksums
    can still be crafted): a `Damaged` error otherwise, never a KeyError or IndexError later."""
    path = folder / INDEX_FILE
    if meta.get("format") != "turkclip-photo-index" or meta.get("version") != VERSION:
        raise Damaged(path, f"it is not a turkclip photo index of version {VERSION}")
    settings = _settings(meta, path)
    paths, embeddings = _entries(tensors, path)
    return PhotoIndex(paths=paths, embeddings=embeddings, folder=folder, bad=_bad(meta, path), **settings)


def _bad(meta: dict, path: Path) -> list[list]:
    """The unreadable files an index or chunk file lists: [path, size, mtime_ns, problem] each."""
    bad = meta.get("bad")
    kinds = (str, int, int, str)
    if not isinstance(bad, list) or not all(isinstance(b, list) and len(b) == 4
                                            and all(isinstance(v, k) for v, k in zip(b, kinds)) for b in bad):
        raise Damaged(path, "its list of unreadable files is malformed")
    return bad


def _settings(meta: dict, path: Path) -> dict:
    """The fields of `meta` that say how the index was built, checked for type."""
    kinds = {"root": str, "model": str, "adapter": (str, type(None)), "text_model": (str, type(None)),
             "tokenizer": (str, type(None)), "precision": str, "generation": int}
    wrong = [k for k, kind in kinds.items() if not isinstance(meta.get(k), kind)]
    if wrong:
        raise Damaged(path, f"its {', '.join(wrong)} field(s) are missing or malformed")
    settings = {k: meta[k] for k in kinds}
    settings["root"] = Path(settings["root"])
    return settings


def _entries(tensors: dict[str, torch.Tensor], path: Path) -> tuple[list[str], torch.Tensor]:
    """(paths, float32 embeddings) of an index or chunk file, checked to be one finite row per path."""
    try:
        emb, sizes, mtimes = tensors["embeddings"], tensors["sizes"], tensors["mtimes"]
        paths = _unpack_paths(tensors["paths"])
    except KeyError as e:
        raise Damaged(path, f"it has no {e} array") from None
    except UnicodeDecodeError:
        raise Damaged(path, "its path table is not UTF-8") from None
    n = len(paths)
    if emb.dim() != 2 or len(emb) != n or sizes.shape != (n,) or mtimes.shape != (n,):
        raise Damaged(path, f"its arrays do not have one row per photo ({n} paths, embeddings {tuple(emb.shape)})")
    if len(set(paths)) != n or "" in paths:
        raise Damaged(path, "its path table repeats a path or holds an empty one")
    if emb.dtype != torch.float16 or not np.isfinite(emb.numpy()).all():  # numpy: ~100x torch's isfinite on a CPU
        raise Damaged(path, "its embeddings are not finite float16 numbers")
    return paths, emb.float()


def build_index(photos: str | Path, output: str | Path, model: str | None = None, adapter: str | None = None,
                tokenizer: str | None = None, device: torch.device | str = "cpu", precision: str = "fp32",
                chunk_size: int = 256, progress: bool = True, text_model: str | None = None) -> IndexReport:
    """Index every photo under `photos` into `output`, or bring an existing index up to date."""
    start = time.perf_counter()
    root, output = Path(photos), Path(output)
    if not root.is_dir():
        raise TurkclipError(f"photo folder not found: {root}")
    root = root.resolve()
    if adapter and text_model:
        raise TurkclipError("give --adapter or --text-model, not both (two roads to the same goal)")
    _check_output(output)  # before the lock file is made in it
    report = IndexReport()
    with _one_writer(output):
        old = _read_state(output, report.repaired)  # what the folder holds, from earlier (maybe interrupted) runs
        meta = _plan_meta(old, root, output, model, adapter, tokenizer, text_model, precision)
        _index_folder(root, output, old, meta, report, device, chunk_size, progress)
    report.seconds = time.perf_counter() - start
    return report


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise TurkclipError(f"--output {output} is a file, not an index folder")
    if (output / "chunks").is_symlink() or (output / "chunks").exists() and not (output / "chunks").is_dir():
        raise TurkclipError(f"{output / 'chunks'} is not a plain folder (a link?): remove it")
    ours = {INDEX_FILE, "chunks", LOCK_FILE}
    if output.is_dir() and not (output / INDEX_FILE).exists() and any(p.name not in ours for p in output.iterdir()):
        raise TurkclipError(f"--output {output} is a folder that is not a photo index: choose an empty or new folder")


@contextlib.contextmanager
def _one_writer(output: Path):
    """Rank 0 holds the folder's writer lock for the whole run; a refusal is raised on every process."""
    lock = WriterLock(output / LOCK_FILE, "`turkclip index`")
    shard.once(lock.acquire)
    try:
        yield
    finally:
        lock.release()


def _plan_meta(old: dict, root: Path, output: Path, model, adapter, tokenizer, text_model, precision) -> dict:
    """The new index's metadata: the flags of this run checked against what the folder was built with."""
    if old["root"] is not None and Path(old["root"]) != root:
        raise TurkclipError(f"{output} indexes {old['root']}, not {root}: choose another --output")
    if old["model"] is None and old["damaged"] and model is None:
        raise TurkclipError(f"{old['damaged']} and does not say which model built it: run the same command with"
                            " --model (and --adapter or --text-model, as when it was built) to rebuild it, or"
                            f" delete {output}")
    name = model_id(model) or old["model"]
    if old["model"] is not None and (name != old["model"] or model_id(adapter) not in (None, old["adapter"])):
        raise TurkclipError(f"{output} was built with model {old['model']} (adapter {old['adapter']}); re-index it"
                            " with the same model (leave out --model/--adapter) or choose another --output")
    if text_model and old["adapter"]:
        raise TurkclipError(f"{output} was built with adapter {old['adapter']}: its photos are embedded for that"
                            " adapter, and queries go through it, not through a --text-model; index the folder into"
                            " a new --output for the text tower")
    if name is None:  # a new index without --model (imported here: an update needs no transformers)
        from turkclip.models.clip import DEFAULT_MODEL

        name = DEFAULT_MODEL
    fresh = old["model"] is None
    return {"format": "turkclip-photo-index", "version": VERSION, "root": str(root), "model": name,
            "adapter": model_id(adapter) if fresh else old["adapter"],
            "tokenizer": model_id(tokenizer) if fresh else old["tokenizer"],
            # the text tower that queries go through (photos are embedded by the base's image tower either way)
            "text_model": model_id(text_model) if text_model else old["text_model"],
            "precision": precision if fresh else old["precision"], "generation": old["generation"]}


def _index_folder(root, output, old, meta, report, device, chunk_size, progress) -> None:
    """Scan, embed what is new, changed or unverified, and write the index (unless nothing changed)."""
    scan = scan_photos(root, exclude=output)
    files, report.skipped = scan.photos, scan.skipped
    if not files:
        raise TurkclipError(f"no photos ({' '.join(PHOTO_SUFFIXES)}) under {root}"
                            + (f" ({len(scan.skipped)} left out, first: {printable(scan.skipped[0][0])}:"
                               f" {scan.skipped[0][1]})" if scan.skipped else ""))
    if meta["text_model"] != old["text_model"]:
        _check_text_model(meta)
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
    _check_same_plan(todo, meta, old["next_chunk"])

    if todo:
        bad += _embed_chunks(todo, root, output, meta, entries, device, chunk_size, progress, old["next_chunk"])
    report.bad = sorted(bad)
    rows = [p for p in sorted(entries) if p in present]
    if not rows:
        raise TurkclipError(f"none of the {len(files)} photos under {root} could be read"
                            f" (first: {printable(bad[0][0])}: {bad[0][3]})")
    unchanged = (not todo and not report.removed and not old["pending"] and old["index"] is not None
                 and len(bad) == len(old["bad"]) and meta["text_model"] == old["text_model"])
    if not unchanged:
        meta["generation"] += 1
        meta["bad"] = report.bad
        shard.once(lambda: _write_index(output, rows, entries, meta))  # rank 0 writes; the others wait for it
    report.index = old["index"] if unchanged else open_index(output)


def _check_text_model(meta: dict) -> None:
    """A text tower newly recorded for the index must load on its base and be aligned to it: recorded otherwise,
    every later `search` and `serve` would fail."""
    from turkclip.roads import load_clip

    if meta["text_model"] is not None:
        load_clip(meta["model"], meta["tokenizer"], text_model=meta["text_model"])


def _check_same_plan(todo: list[PhotoFile], meta: dict, first_chunk: int) -> None:
    """Several processes: each scanned the folder itself; a photo added or changed between their scans would
    split the chunks differently, so they compare what they are about to do and refuse if it differs."""
    if shard.rank_and_world()[1] == 1:
        return
    plan = hashlib.sha256(json.dumps([[f.path, f.stamp] for f in todo] + [meta, first_chunk], default=str).encode())
    if len(set(shard.gather_objects(plan.hexdigest()))) > 1:
        raise TurkclipError(f"the photos under {meta['root']} changed while the processes were scanning them;"
                            " run the same command again")


def _embed_chunks(todo, root, output, meta, entries, device, chunk_size, progress, first_chunk) -> list[list]:
    """Embed `todo` a chunk at a time, saving each chunk before the next; returns the unreadable files.
    Several processes: each decodes and embeds its share of a chunk, all receive the chunk, rank 0 saves it."""
    from turkclip.embedding.embed import embed_images
    from turkclip.roads import load_clip

    clip = load_clip(meta["model"], meta["tokenizer"], adapter=meta["adapter"])
    device = torch.device(device)
    clip.model.to(device).eval()
    rank, world = shard.rank_and_world()
    bad = []
    bar = progress_bar(total=len(todo), desc="indexing photos", unit="photo", enabled=progress and rank == 0)
    parts = [todo[start : start + chunk_size] for start in range(0, len(todo), chunk_size)]
    mine = [part[shard.share(len(part), rank, world)] for part in parts]  # this process's share of each chunk
    # the next share is decoded (PIL, threads) while this one is embedded (torch): both cores stay busy
    prefetch = ThreadPoolExecutor(1)
    decoding = prefetch.submit(_decode, root, [f.path for f in mine[0]], clip.preprocess.size)
    for i, part in enumerate(parts):
        pixels, kept, problems = decoding.result()
        if i + 1 < len(parts):
            decoding = prefetch.submit(_decode, root, [f.path for f in mine[i + 1]], clip.preprocess.size)
        emb = None
        if kept:
            emb = F.normalize(embed_images(clip.model, pixels, clip.preprocess, device, meta["precision"],
                                           progress=False), dim=-1)
        emb = shard.gather_rows(emb).half()  # every share's rows, in the chunk's order
        shares = shard.gather_objects(([mine[i][j].path for j in kept], problems))
        by_name = {f.path: f for f in part}
        ok = [by_name[name] for names, _ in shares for name in names]
        bad_rows = [[name, by_name[name].size, by_name[name].mtime_ns, problem]
                    for _, share_problems in shares for name, problem in share_problems]
        # rank 0 saves the chunk (an error there, e.g. a full disk, is raised on every process)
        name = f"chunk-g{meta['generation']}-{first_chunk + i:06d}.safetensors"
        shard.once(lambda: _save_chunk(output / "chunks" / name, ok, emb, bad_rows, meta))
        for f, e in zip(ok, emb):
            entries[f.path] = (f.stamp, e)
        bad += bad_rows
        bar.update(len(part))
    bar.close()
    prefetch.shutdown()
    return bad


def _decode(root: Path, names: list[str], size: int):
    """The project's decoder on one chunk (or a process's share of it, maybe empty): (pixels or None, indices that
    loaded, [(name, problem)])."""
    return load_images(root, names, size, workers=min(4, os.cpu_count() or 1))


# ---- reading and writing the files -------------------------------------------------------------

def _pack_paths(paths: list[str]) -> torch.Tensor:
    return torch.frombuffer(bytearray("\0".join(paths).encode("utf-8")) or bytearray(1), dtype=torch.uint8)


def _unpack_paths(packed: torch.Tensor) -> list[str]:
    text = bytes(packed.numpy()).decode("utf-8")
    return text.split("\0") if text.strip("\0") else []


def _tensors(files: list[tuple[str, tuple[int, int]]], emb: torch.Tensor) -> dict[str, torch.Tensor]:
    """The arrays of an index or chunk file: [(path, (size, mtime_ns))] and their embeddings, row for row."""
    return {"embeddings": emb.half(), "paths": _pack_paths([p for p, _ in files]),
            "sizes": torch.tensor([s[0] for _, s in files], dtype=torch.int64),
            "mtimes": torch.tensor([s[1] for _, s in files], dtype=torch.int64)}


def _save_chunk(path: Path, ok: list[PhotoFile], emb: torch.Tensor, bad_rows: list, meta: dict) -> None:
    """One chunk of an indexing run: the embeddings of the photos in it that loaded, and those that did not."""
    index_file.write(path, _tensors([(f.path, f.stamp) for f in ok], emb), dict(meta, bad=bad_rows), _CHUNKS_KEPT)


def _write_index(output: Path, rows: list[str], entries: dict, meta: dict) -> None:
    emb = torch.stack([entries[p][1] for p in rows])
    index_file.write(output / INDEX_FILE, _tensors([(p, entries[p][0]) for p in rows], emb), meta, _KEPT)
    for _, _, chunk in _chunk_files(output):  # every generation's: all are folded in or outdated now
        chunk.unlink()
    for folder in (output, output / "chunks"):  # temp files of writes a kill cut short (we hold the lock: ours)
        for leftover in [*folder.glob(".*.tmp"), *folder.glob(".tmp*")] if folder.is_dir() else []:
            leftover.unlink()
    with contextlib.suppress(OSError):  # only when empty: anything else in it stays
        (output / "chunks").rmdir()


def _read_state(output: Path, repaired: list[str]) -> dict:
    """Everything an update starts from: the finished index (if any) plus chunks of an interrupted run. A damaged
    index or chunk is noted in `repaired` and its photos are left out (embedded again)."""
    state = {"root": None, "model": None, "adapter": None, "text_model": None, "tokenizer": None, "precision": None,
             "generation": 0, "entries": {}, "indexed": set(), "pending": set(), "bad": [], "index": None,
             "damaged": None, "next_chunk": 0}
    if (output / INDEX_FILE).is_file():
        try:
            tensors, meta = index_file.read(output / INDEX_FILE)  # read once: the index, and the entries it keeps
            index = _index_from(tensors, meta, output)
        except Damaged as e:
            repaired.append(f"{e}: every photo is embedded again")
            state["damaged"] = str(e)
            _recover_settings(state, e, output)
        else:
            state.update(index=index, root=str(index.root), model=index.model, adapter=index.adapter,
                         text_model=index.text_model, tokenizer=index.tokenizer, precision=index.precision,
                         generation=index.generation, bad=list(index.bad), indexed=set(index.paths))
            _add_entries(state["entries"], index.paths, tensors)
    chunks = _chunk_files(output)
    if state["damaged"] and state["model"] is None:  # which generation the index was is unknown: a new one
        state["generation"] = max([g for g, _, _ in chunks], default=0) + 1
    mine = [(n, path) for g, n, path in chunks if g == state["generation"]]
    state["next_chunk"] = max([n for n, _ in mine], default=-1) + 1  # a damaged chunk's number is not reused
    for _, chunk in mine:
        try:
            tensors, meta = index_file.read(chunk)
            paths, _ = _entries(tensors, chunk)
            settings, bad = _settings(meta, chunk), _bad(meta, chunk)
        except Damaged as e:
            repaired.append(f"{e}: its photos are embedded again")
            continue
        if state["model"] is None:
            state.update({k: settings[k] for k in ("model", "adapter", "text_model", "tokenizer", "precision")},
                         root=str(settings["root"]))
        state["pending"] |= set(_add_entries(state["entries"], paths, tensors))
        state["bad"] = [b for b in state["bad"] if b[0] not in state["pending"]] + bad
    return state


def _recover_settings(state: dict, damaged: Damaged, output: Path) -> None:
    """From a damaged index whose header is intact (only its arrays failed the check): how it was built, so the
    rebuild uses the same model. Nothing at all when the header cannot be trusted either."""
    try:
        settings = _settings(damaged.meta or {}, output / INDEX_FILE)
    except Damaged:
        return
    state.update({k: settings[k] for k in ("model", "adapter", "text_model", "tokenizer", "precision",
                                           "generation")}, root=str(settings["root"]))


def _chunk_files(output: Path) -> list[tuple[int, int, Path]]:
    """(generation, number, path) of every chunk file in the folder."""
    chunks = output / "chunks"
    found = [(_CHUNK.fullmatch(p.name), p) for p in chunks.iterdir()] if chunks.is_dir() else []
    return sorted((int(m[1]), int(m[2]), p) for m, p in found if m and p.is_file())


def _add_entries(entries: dict, paths: list[str], tensors: dict) -> list[str]:
    for p, size, mtime, emb in zip(paths, tensors["sizes"].tolist(), tensors["mtimes"].tolist(), tensors["embeddings"]):
        entries[p] = ((size, mtime), emb)
    return paths
