"""Resumable training state in one file, written whole, sealed with a checksum, verified before it is used.

`checkpoint/checkpoint.pt` in the output folder holds the trainable tensors, optimizer and scheduler
state, RNG states, the position in the data and the settings of the run. It is a subfolder so that the
adapter folder a user ships holds no training state: leave `checkpoint/` out (or delete it) once training is done.
It is written to a temp file and renamed over the old one, so a kill or a full disk at any moment leaves the
previous checkpoint intact. It is our own file, and it is still read with `torch.load(weights_only=True)`:
no pickled code ever runs.

The seal: `torch.save` writes a zip archive; its comment (the standard place for a note on a whole archive,
which `torch.load` ignores) holds a SHA-256 of every byte before it. A flipped bit anywhere, a truncated or an
empty file is refused before anything is loaded.

A resumed run must be the run that was interrupted: `run_settings` records every setting that changes what the
run learns (the data and model files by their contents), `check_same_run` names each one that differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from pathlib import Path

import torch

from turkclip.errors import TurkclipError
from turkclip.whole_file import write_whole

SUBFOLDER = "checkpoint"
FILENAME = f"{SUBFOLDER}/checkpoint.pt"  # relative to the output folder
_SEAL = b"turkclip-sha256:"  # + 64 hex digits: the zip comment
_SEAL_LEN = len(_SEAL) + 64
_END = b"PK\x05\x06"  # a zip's end-of-central-directory record: 22 bytes, the last 2 the comment's length


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save(folder: Path, model, optimizer, scheduler, position: dict, rng_per_rank: list[dict] | None = None) -> None:
    """`rng_per_rank`: every process's RNG state when training in several (distributed.rng_states())."""
    state = {
        "trainable": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "per_rank": rng_per_rank or []},
        "position": position,  # epoch, step_in_epoch, global_step, best, run settings, ...
    }

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        _seal(tmp)

    write_whole(folder / FILENAME, _nbytes(state), write, "the last checkpoint is untouched; free some space and"
                " continue with the same command and --resume")


def _nbytes(obj) -> int:
    """Bytes of all tensors in a nested state (about the size of the file torch.save writes)."""
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _seal(path: Path) -> None:
    """Put the SHA-256 of everything before the comment into the zip comment `torch.save` left empty."""
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 22))
        if f.read(22)[:4] != _END:
            raise RuntimeError(f"torch.save wrote no plain zip end record to {path}")  # a torch that writes comments
        digest = _digest(f, size - 2)
        f.seek(size - 2)
        f.write(struct.pack("<H", _SEAL_LEN) + _SEAL + digest.encode("ascii"))


def verify(path: Path) -> None:
    """Refuse a checkpoint whose seal is missing or does not match its bytes, in one line."""
    advice = (f"start over (another --output, or delete {path.parent}) or restore {path.name} from a backup")
    size = path.stat().st_size
    if size == 0:
        raise TurkclipError(f"cannot resume from {path}: the file is empty (0 bytes); {advice}")
    with path.open("rb") as f:
        f.seek(max(0, size - _SEAL_LEN - 22))
        tail = f.read()
        sealed = (len(tail) == _SEAL_LEN + 22 and tail[:4] == _END and tail[-_SEAL_LEN:].startswith(_SEAL)
                  and tail[20:22] == struct.pack("<H", _SEAL_LEN))
        if not sealed:
            raise TurkclipError(f"cannot resume from {path}: it has no turkclip checksum (it is damaged, truncated, or"
                                f" was not written by this turkclip); {advice}")
        if _digest(f, size - _SEAL_LEN - 2) != tail[-64:].decode("ascii", "replace"):
            raise TurkclipError(f"cannot resume from {path}: it is damaged (its checksum does not match); {advice}")


def _digest(f, length: int) -> str:
    """SHA-256 of the first `length` bytes of the open file `f`."""
    h = hashlib.sha256()
    f.seek(0)
    left = length
    while left > 0:
        block = f.read(min(left, 1 << 20))
        if not block:
            break
        h.update(block)
        left -= len(block)
    return h.hexdigest()


def move_legacy(folder: Path) -> None:
    """Runs from before the checkpoint/ subfolder kept checkpoint.pt beside the adapter: move it in, so that
    --resume continues them and a new run without --resume refuses them, as for any other run."""
    old = folder / "checkpoint.pt"
    if old.is_file() and not (folder / FILENAME).exists():
        (folder / SUBFOLDER).mkdir(exist_ok=True)
        os.replace(old, folder / FILENAME)


def load(folder: Path, model, optimizer, scheduler, rank: int = 0) -> dict:
    """Restore everything `save` wrote (the RNG state of process `rank`); returns the saved position."""
    path = folder / FILENAME
    verify(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # sealed but foreign (e.g. pickled objects weights_only refuses)
        raise TurkclipError(f"cannot read {path}: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    if not isinstance(state, dict) or not {"trainable", "optimizer", "scheduler", "rng", "position"} <= state.keys():
        raise TurkclipError(f"{path} is not a turkclip checkpoint; use another --output or remove it")
    params = dict(model.named_parameters())
    shapes = {n: tuple(t.shape) for n, t in state["trainable"].items()}
    if shapes != {n: tuple(p.shape) for n, p in params.items() if p.requires_grad}:
        raise TurkclipError(f"{path} was written by a run with other LoRA settings; resume with the same flags")
    with torch.no_grad():
        for name, tensor in state["trainable"].items():
            params[name].copy_(tensor)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError:  # e.g. other parameter groups (weight decay split by an older turkclip)
        raise TurkclipError(f"{path} holds optimizer state of another layout; start a new --output") from None
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    if rank < len(rng.get("per_rank", [])):  # (another number of processes is refused by check_same_run)
        rng = rng["per_rank"][rank]
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["position"]


# ---- is it the same run? ------------------------------------------------------------------------

# Settings that do not change what a run learns: where it writes, how often it reports or checkpoints, how it runs.
_NOT_THE_RUN = {"output", "resume", "cache_dir", "checkpoint_every", "log_every", "progress", "compile",
                "workers",  # decoding processes: the shards' order does not depend on their number (data/stream.py)
                "lora_token_ids"}  # token_ids: derived from the data and model, which are compared themselves
# Files and folders compared by what they hold, not by their names (a moved folder still resumes; a replaced
# file does not): model folders and captions files by their bytes, shards by their names, sizes and times
# (hashing terabytes of tars is not worth it), the images folder by where it is.
_BY_CONTENT = {"model", "tokenizer", "text_model", "captions", "rehearsal_captions", "parallel_captions"}
_BY_STAMP = {"shards", "val_shards"}
_BY_PLACE = {"images"}


def run_settings(cfg, processes: int) -> dict:
    """The settings a resumed run must share with the run it continues: every setting of `cfg` (a TrainConfig)
    that decides which items a step sees or how a step updates the weights, the precision it resolves to here,
    and the number of processes. Compared by `check_same_run`."""
    from turkclip.embedding.embed import resolve_precision

    run = {}
    for name, value in _flat(cfg):
        if name in _NOT_THE_RUN:
            continue
        if value is not None and name in _BY_CONTENT | _BY_STAMP | _BY_PLACE:
            value = _fingerprint(name, value)
        run[name] = json.loads(json.dumps(value, default=str))  # tuples as lists: as a saved run reads back
    if "precision" in run:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        run["precision"] = resolve_precision(cfg.precision, device)
    run["processes"] = processes
    return run


def _flat(cfg) -> list[tuple[str, object]]:
    """(name, value) of every field; nested settings (LoRA) as lora_r, lora_alpha, ..."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += [(f"{f.name}_{name}", v) for name, v in _flat(value)]
        else:
            out.append((f.name, value))
    return out


def _fingerprint(name: str, value: str):
    """What a file setting stands for (see _BY_CONTENT): a local file or folder by its contents, shards by their
    stamps, the images folder by its absolute path; a hub id as it is."""
    from turkclip.cache import files_fingerprint
    from turkclip.data.shards import expand

    if name in _BY_STAMP:
        return files_fingerprint([p.resolve() for p in expand(value)])
    path = Path(value).expanduser()
    if not path.exists():
        return value  # a hub id
    if name in _BY_PLACE:
        return str(path.resolve())
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and SUBFOLDER not in
                                                  p.relative_to(path).parts and not p.name.startswith("."))
    for file in files:
        h.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return "sha256:" + h.hexdigest()


def check_same_run(folder: Path, saved: dict, run: dict) -> None:
    """Refuse, naming every flag that differs, to resume with settings that would not continue the saved run."""
    changed = []
    for k, v in run.items():
        if saved.get(k) == v:
            continue
        flag = f"--{k.replace('_', '-')}"
        if k == "processes":
            changed.append(f"number of processes {v} (was {saved.get(k)}: launch as many)")
        elif k in _BY_CONTENT | _BY_STAMP and saved.get(k) is not None and v is not None:
            changed.append(f"{flag} (its files are not those the run started with)")
        else:
            changed.append(f"{flag} {v} (was {saved.get(k)})")
    if changed:
        raise TurkclipError(f"cannot resume {folder} with other settings: {', '.join(changed)}; use the original flags")
