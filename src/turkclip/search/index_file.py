"""The files `turkclip index` writes (the index and its chunks): safetensors with checksums, written whole,
verified when read.

A file holds tensors and a JSON header (`meta`). `write` puts two SHA-256 checksums in it: one over every tensor
(name, dtype, shape and bytes) inside the JSON (`tensors_sha256`), and one over the JSON text itself, beside it.
`read` recomputes both before anything is used, so a flipped bit anywhere that matters is found:

- the JSON is intact but a tensor is not: `Damaged.meta` is the JSON (it still says which model and folder the
  file was built for, so an update can rebuild it);
- the JSON or the file's layout is damaged, or the file is not ours: `Damaged.meta` is None (nothing in it can
  be trusted).

A file without checksums (written by turkclip before they existed) cannot be verified: it is `Damaged` too, with
its JSON, so an update re-embeds its photos. The price is one hash of the file each time it is opened
(bench/integrity_bench.py: a 100k-photo index opened in 1.9 s instead of 0.8 s on the 2-core CI machine at load ~18).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from turkclip.errors import TurkclipError
from turkclip.whole_file import write_whole


class Damaged(TurkclipError):
    """`path` cannot be trusted; `why` says how it failed the check; `meta` is its verified JSON, if any."""

    def __init__(self, path: Path, why: str, meta: dict | None = None):
        super().__init__(f"{path} is damaged ({why})")
        self.path, self.why, self.meta = path, why, meta


def write(path: Path, tensors: dict[str, torch.Tensor], meta: dict, then: str) -> None:
    """Write `tensors` and `meta` with their checksums, whole or not at all (`then`: see whole_file.write_whole)."""
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    text = json.dumps(dict(meta, tensors_sha256=tensors_digest(tensors)))
    header = {"turkclip": text, "turkclip_sha256": hashlib.sha256(text.encode()).hexdigest()}
    nbytes = sum(t.nbytes for t in tensors.values()) + len(text) + 4096
    write_whole(path, nbytes, lambda tmp: save_file(tensors, tmp, metadata=header), then)


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a file `write` wrote, after checking both checksums; `Damaged` if either differs."""
    try:
        with safe_open(path, "pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a damaged layout: safetensors raises several types
        raise Damaged(path, f"unreadable: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    text, checksum = header.get("turkclip"), header.get("turkclip_sha256")
    if not isinstance(text, str):
        raise Damaged(path, "it is not a turkclip index file")
    if checksum is not None and hashlib.sha256(text.encode()).hexdigest() != checksum:
        raise Damaged(path, "the checksum of its header does not match")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        raise Damaged(path, "its header is not turkclip's")
    if checksum is None:
        raise Damaged(path, "it has no checksum: written by an older turkclip", meta)
    if meta.get("tensors_sha256") != tensors_digest(tensors):
        raise Damaged(path, "the checksum of its arrays does not match", meta)
    return tensors, meta


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        h.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        h.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    return h.hexdigest()
