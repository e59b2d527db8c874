"""Shards without a copy of their pixels: images decoded from the tars when read, the frozen tower's bank made
during the one read, and both-tower epochs decoded by DataLoader workers in an order that is a function of
(seed, epoch), giving exactly the pixels the on-disk store would."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_shards import _good, _write_shard
from turkclip.data import shard_set
from turkclip.data.augment import batch_pixels, parse_policy
from turkclip.data.images import Preprocess
from turkclip.data.pixel_store import PixelStore
from turkclip.data.sampling import epoch_batches
from turkclip.data.shard_set import ShardImages, load_shard_set
from turkclip.data.stream import pixel_feed, visit_order
from turkclip.errors import TurkclipError
from turkclip_train.cli import main
from turkclip_train.distributed import local_batches

SIZE = Preprocess(size=16)


def _shards(folder, counts=(7, 5, 0, 9), prefix="s"):
    """Shards of `counts` samples (one empty), keys unique across them, two captions each."""
    n = 0
    for s, count in enumerate(counts):
        samples = [_good(f"{prefix}{n + i:03d}", n + i, f"resim {n + i}\nbaşka {n + i}") for i in range(count)]
        _write_shard(folder / f"{prefix}-{s}.tar", sum(samples, []))
        n += count
    return str(folder / f"{prefix}-{{0..{len(counts) - 1}}}.tar")


@pytest.fixture
def both(tmp_path):
    """The same shards streamed and in the pixel store."""
    pattern = _shards(tmp_path)
    streamed = load_shard_set(pattern, "tr", SIZE, cache_dir=tmp_path / "c")
    stored = load_shard_set(pattern, "tr", SIZE, cache_dir=tmp_path / "c", pixel_store=True)
    assert isinstance(streamed.pixels, ShardImages) and isinstance(stored.pixels, PixelStore)
    assert streamed.filenames == stored.filenames and streamed.captions == stored.captions
    return streamed, stored


def test_shard_images_read_in_slices_equal_the_pixel_store(both):
    streamed, stored = both
    n = len(stored)
    assert n == 21 and streamed.pixels.shape == stored.pixels.shape
    for a, b in ((0, 5), (5, 13), (13, 21), (8, 12), (0, 21), (20, 21), (3, 3)):  # on, on, on, jump back, ...
        assert torch.equal(streamed.pixels[a:b], stored.pixels[a:b]), (a, b)
    assert torch.equal(streamed.pixels[7], stored.pixels[7])
    with pytest.raises(TypeError, match="--pixel-store"):
        streamed.pixels[torch.tensor([3, 1])]


@pytest.mark.parametrize("world", [1, 2])
def test_the_streamed_order_visits_every_image_once_and_gives_each_process_its_own(both, world):
    streamed, _ = both
    orders = [visit_order(streamed.pixels, 3, epoch, 4, world) for epoch in (0, 1)]
    assert all(sorted(o) == list(range(len(streamed))) for o in orders)
    assert orders[0] != orders[1] and orders[0] == visit_order(streamed.pixels, 3, 0, 4, world)
    counts = set()
    for epoch, order in enumerate(orders):
        batches = epoch_batches(streamed.captions, "tr", 4 * world, 3, epoch, order=order)
        counts.add(len(batches))
        for rank in range(world):
            assert all(it.image % world == rank for b in local_batches(batches, rank, world) for it in b)
    assert len(counts) == 1  # the same number of steps every epoch
    assert visit_order(both[1].pixels, 3, 0, 4, world) is None  # a set read at random shuffles as before


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_worker_decoded_batches_equal_the_pixel_store_and_resume_mid_epoch(both, workers):
    streamed, stored = both
    policy = parse_policy("crop,flip")
    order = visit_order(streamed.pixels, 1, 2, 4)
    batches = epoch_batches(streamed.captions, "tr", 4, 1, 2, flip=True, order=order)
    want = [batch_pixels(stored.pixels, b, policy, 1, 2) for b in batches]
    got = list(pixel_feed(streamed.pixels, batches, policy, 1, 2, workers=workers))
    assert len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want))
    tail = list(pixel_feed(streamed.pixels, batches[2:], policy, 1, 2, workers=workers))  # a resumed epoch
    assert all(torch.equal(g, w) for g, w in zip(tail, want[2:])) and len(tail) == len(want) - 2


def test_a_shard_that_changed_since_it_was_read_is_one_line(tmp_path):
    pattern = _shards(tmp_path, (3,))
    data = load_shard_set(pattern, "tr", SIZE, cache_dir=tmp_path / "c")
    _write_shard(tmp_path / "s-0.tar", _good("s000", 0) + [("s001.jpg", b"broken"), ("s001.txt", b"x")])
    with pytest.raises(TurkclipError, match=r"s-0.tar has fewer samples than when it was read: run again"):
        data.pixels[0:3]
    broken = [("s001.jpg", b"broken"), ("s001.txt", b"x")]
    _write_shard(tmp_path / "s-0.tar", _good("s000", 0) + broken + _good("s002", 2))
    with pytest.raises(TurkclipError, match=r"^sample 's001' no longer decodes \(unreadable .*\); .* run again"):
        data.pixels[0:3]


def _count_reads(monkeypatch) -> list:
    reads = []
    real = shard_set.read_samples

    def counting(paths, *a, **k):
        reads.append([p.name for p in paths])
        return real(paths, *a, **k)

    monkeypatch.setattr(shard_set, "read_samples", counting)
    return reads


def test_text_only_training_reads_the_shards_once_into_the_bank(tmp_path, tiny_model, one_thread, monkeypatch):
    train, val = _shards(tmp_path, (6, 4), "t"), _shards(tmp_path, (4,), "v")
    reads = _count_reads(monkeypatch)
    argv = ["train", "--model", str(tiny_model), "--shards", train, "--val-shards", val, "--lora-towers", "text",
            "--epochs", "2", "--batch-size", "4", "--no-progress", "--cache-dir", str(tmp_path / "c")]
    assert main(argv + ["--output", str(tmp_path / "a")]) == 0
    assert len(reads) == 2  # one scan of the train shards, one of the val shards: nothing decoded again
    kinds = sorted(p.name.split("-")[0] for p in (tmp_path / "c").iterdir() if not p.name.startswith("text"))
    assert kinds == ["image", "image", "shardset", "shardset"]  # two banks + two metadata entries, no pixels
    assert main(argv + ["--output", str(tmp_path / "b")]) == 0
    assert len(reads) == 2  # the second run reads neither the shards nor the images
    metrics = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "val" for r in metrics) == 2


def test_evaluate_reads_the_shards_once_into_the_bank(tmp_path, tiny_model, one_thread, monkeypatch):
    pattern = _shards(tmp_path, (5, 3))
    reads = _count_reads(monkeypatch)
    argv = ["evaluate", "--model", str(tiny_model), "--shards", pattern, "--cache-dir", str(tmp_path / "c"),
            "--json", str(tmp_path / "m.json")]
    assert main(argv) == 0
    first = json.loads((tmp_path / "m.json").read_text())
    assert len(reads) == 1 and first["n_images"] == 8 and first["n_texts"] == 16
    assert main(argv) == 0
    assert len(reads) == 1 and json.loads((tmp_path / "m.json").read_text())["text_to_image"] == first["text_to_image"]


def test_both_towers_stream_by_default_and_read_the_pixel_store_when_asked(tmp_path, tiny_model, one_thread):
    pattern = _shards(tmp_path, (5, 5))
    runs = {}
    for name, extra in (("stream", ["--workers", "1"]), ("store", ["--pixel-store"])):
        out = tmp_path / name
        assert main(["train", "--model", str(tiny_model), "--shards", pattern, "--output", str(out), "--epochs", "1",
                     "--batch-size", "4", "--no-progress", "--cache-dir", str(tmp_path / name / "c")] + extra) == 0
        runs[name] = sorted(p.name.split("-")[0] for p in (tmp_path / name / "c").iterdir())
        assert json.loads((out / "summary.json").read_text())["train_images"] == 10
    assert runs == {"stream": ["shardset"], "store": ["pixels", "pixels"]}
    losses = [json.loads(line)["loss"] for line in (tmp_path / "stream" / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(losses).all()


@pytest.mark.slow
def test_two_processes_stream_their_own_images(tmp_path, tiny_model):
    """torchrun with 2 processes: each decodes the images of its own index parity with a worker of its own, and the
    run takes as many steps as the global batch allows (11 images at 2 per process: 3 global batches, the last 3)."""
    import os
    import subprocess
    import sys

    pattern = _shards(tmp_path, (4, 7))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                           "turkclip_train.cli", "train", "--model", str(tiny_model), "--shards", pattern, "--output",
                           str(out), "--epochs", "2", "--batch-size", "2", "--workers", "1", "--no-progress",
                           "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_images"] == 11 and summary["steps"] == 2 * 3
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # every record written once
