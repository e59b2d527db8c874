"""The disk-backed pixel store reads back exactly what was decoded, in any index order, without holding it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from turkclip.data.captions import read_captions
from turkclip.data.dataset import load_image_text_set
from turkclip.data.images import Preprocess, load_images
from turkclip.data.pixel_store import PixelStore, open_store, write_store


def _rows(n, size=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def test_rows_come_back_in_any_order_repeated_and_sliced(tmp_path):
    rows = _rows(10)
    store, meta = write_store(tmp_path, "k", 4, list(rows[:3]) + ["broken"] + list(rows[3:]), 11)
    assert meta["count"] == 10 and meta["problems"] == [(3, "broken")]
    assert torch.equal(store[torch.tensor([7, 2, 3, 2, 9, 0, 1])], torch.from_numpy(rows[[7, 2, 3, 2, 9, 0, 1]]))
    assert torch.equal(store[2:8], torch.from_numpy(rows[2:8]))
    assert torch.equal(store[-1], torch.from_numpy(rows[-1]))
    assert store[:0].shape == (0, 3, 4, 4) and store.shape == (10, 3, 4, 4)
    with pytest.raises(IndexError):
        store[[10]]


def test_an_entry_is_found_only_when_whole(tmp_path):
    write_store(tmp_path, "k", 4, list(_rows(3)), 3)
    assert open_store(tmp_path, "k", 4) is not None
    assert open_store(tmp_path, "k", 8) is None  # another image size is another entry
    (tmp_path / "pixels-k.u8").write_bytes(b"\0" * 10)  # a truncated file is not served
    assert open_store(tmp_path, "k", 4) is None


def test_a_set_decodes_once_then_reads_the_store_and_matches_in_memory_decoding(tmp_path, tiny_images, monkeypatch):
    (tmp_path / "c.csv").write_text("image,caption\n" + "".join(f"{i:02d}.jpg,resim {i}\n" for i in range(12)))
    captions = read_captions(tmp_path / "c.csv", "tr")
    data = load_image_text_set(captions, tiny_images, Preprocess(size=16), cache_dir=tmp_path / "cache")
    assert isinstance(data.pixels, PixelStore)
    expected, kept, bad = load_images(tiny_images, [f"{i:02d}.jpg" for i in range(12)], 16)
    expected = torch.from_numpy(expected)
    assert torch.equal(data.pixels[:], expected) and not bad
    import turkclip.data.dataset as dataset

    monkeypatch.setattr(dataset, "decode_in_order", lambda *a, **k: pytest.fail("decoded again"))
    again = load_image_text_set(captions, tiny_images, Preprocess(size=16), cache_dir=tmp_path / "cache")
    assert torch.equal(again.pixels[[3, 1]], expected[[3, 1]])
    assert again.pixels.fingerprint == data.pixels.fingerprint


def test_without_a_cache_the_file_lives_as_long_as_the_store(tmp_path, tiny_images):
    (tmp_path / "c.csv").write_text("image,caption\n00.jpg,bir\n01.jpg,iki\n")
    data = load_image_text_set(read_captions(tmp_path / "c.csv", "tr"), tiny_images, Preprocess(size=8), cache_dir=None)
    path = data.pixels.path
    assert path.is_file() and data.pixels[1].shape == (3, 8, 8)
    del data
    import gc

    gc.collect()
    assert not path.exists()


def test_a_store_crosses_a_fork_with_its_own_descriptor(tmp_path):
    import multiprocessing as mp

    rows = _rows(5)
    store, _ = write_store(tmp_path, "k", 4, list(rows), 5)
    store[0]  # open the descriptor in the parent
    with mp.get_context("fork").Pool(1) as pool:
        got = pool.apply(_sum_rows, (store,))
    assert got == int(rows.astype(np.int64).sum())


def _sum_rows(store: PixelStore) -> int:
    return int(store[:].long().sum())


_TWO_RANKS = """
import json, os, sys
import torch.distributed as dist
from pathlib import Path
import turkclip.data.dataset as dataset
from turkclip.data.captions import read_captions
from turkclip.data.images import Preprocess

dist.init_process_group("gloo")
rank, out = dist.get_rank(), Path(sys.argv[1])
real = dataset.decode_in_order
decoded = []
dataset.decode_in_order = lambda jobs, *a, **k: real(list(jobs), *a, **k) if decoded.append(1) is None else None
data = dataset.load_image_text_set(read_captions(out / "c.csv", "tr"), out / "images", Preprocess(size=16),
                                   cache_dir=out / "cache")
(out / f"rank{rank}.json").write_text(json.dumps({"decoded": len(decoded), "sum": int(data.pixels[:].long().sum())}))
dist.destroy_process_group()
"""


def test_two_processes_decode_once_and_read_the_same_rows(tmp_path, tiny_images):
    """Under torchrun, rank 0 decodes into the cache while rank 1 waits, then rank 1 reads rank 0's file."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    assert tiny_images == tmp_path / "images"
    (tmp_path / "c.csv").write_text("image,caption\n" + "".join(f"{i:02d}.jpg,resim {i}\n" for i in range(12)))
    (tmp_path / "two_ranks.py").write_text(_TWO_RANKS)
    src = str(Path(__file__).parents[1] / "src")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "two_ranks.py"), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["decoded"] for r in ranks] == [1, 0]
    assert ranks[0]["sum"] == ranks[1]["sum"] > 0
