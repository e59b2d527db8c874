"""WebDataset tar shards: read as img2dataset writes them, bad samples counted and skipped only when asked,
decoded once into the pixel store, and usable by `turkclip train` and `turkclip evaluate` in place of a folder."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from turkclip.data import shard_set, shards
from turkclip.data.images import Preprocess, load_image
from turkclip.data.shard_set import load_shard_set
from turkclip.data.shards import split_key
from turkclip.errors import TurkclipError
from turkclip_train.cli import main


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (30 + seed, 40, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _write_shard(path, members: list[tuple[str, bytes]]):
    where = {"fileobj": path} if isinstance(path, io.BytesIO) else {"name": path}
    with tarfile.open(mode="w", **where) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _good(key: str, seed: int, caption: str = "kırmızı bir top") -> list[tuple[str, bytes]]:
    return [(f"{key}.jpg", _jpeg(seed)), (f"{key}.txt", caption.encode())]


def test_keys_split_at_the_first_dot_of_the_file_name():
    assert split_key("000012.jpg") == ("000012", "jpg")
    assert split_key("a.b/000012.tr.TXT") == ("a.b/000012", "tr.txt")


def test_captions_from_txt_lines_and_json_and_pixels_equal_decoding_the_file(tmp_path):
    _write_shard(tmp_path / "00000.tar", _good("000", 0, "bir köpek\nçimde koşan köpek\n") + [
        ("001.jpg", _jpeg(1)), ("001.json", json.dumps({"caption": "İki kedi", "url": "x"}).encode()),
        ("002.png", _png(2)), ("002.json", json.dumps({"captions": ["deniz", " "]}).encode())])
    _write_shard(tmp_path / "00001.tar", _good("003", 3))
    data = load_shard_set(str(tmp_path / "{00000..00001}.tar"), "tr", Preprocess(size=16), cache_dir=tmp_path / "c")
    assert data.filenames == ["000", "001", "002", "003"]
    assert data.captions == [["bir köpek", "çimde koşan köpek"], ["İki kedi"], ["deniz"], ["kırmızı bir top"]]
    assert torch.equal(data.pixels[1], torch.from_numpy(load_image(io.BytesIO(_jpeg(1)), 16)))
    assert data.lang == "tr" and data.skipped == []


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 20, 4), seed, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _shards_with_bad_samples(folder):
    _write_shard(folder / "00000.tar", _good("000", 0) + [
        ("001.jpg", b"not a jpeg at all"), ("001.txt", b"bozuk"),  # undecodable image
        ("002.jpg", _jpeg(2)),  # no caption
        ("003.txt", b"resmi yok")]  # no image
        + _good("004", 4))
    _write_shard(folder / "00001.tar", _good("004", 5) + _good("005", 6))  # a key seen before
    whole = io.BytesIO()
    _write_shard(whole, _good("006", 7) + _good("007", 8))
    with tarfile.open(fileobj=io.BytesIO(whole.getvalue())) as tar:
        cut = tar.getmember("007.jpg").offset_data + 100
    (folder / "00002.tar").write_bytes(whole.getvalue()[:cut])  # cut inside 007's image


def test_bad_samples_are_counted_and_stop_the_run_unless_skipped(tmp_path):
    _shards_with_bad_samples(tmp_path)
    pattern = str(tmp_path / "{00000..00002}.tar")
    with pytest.raises(TurkclipError, match=r"^5 of 9 samples in .* are bad \(first: 00000.tar:001: unreadable"
                                            r".*pass --skip-bad-images"):
        load_shard_set(pattern, "tr", Preprocess(size=16), cache_dir=tmp_path / "c")
    data = load_shard_set(pattern, "tr", Preprocess(size=16), skip_bad=True, cache_dir=tmp_path / "c")
    assert data.filenames == ["000", "004", "005", "006"]
    problems = dict(data.skipped)
    assert set(problems) == {"00000.tar:001", "00000.tar:002", "00000.tar:003", "00001.tar:004", "00002.tar:007"}
    assert problems["00000.tar:002"].startswith("no caption") and problems["00000.tar:003"].startswith("no image")
    assert problems["00001.tar:004"].startswith("key repeated") and "ends early" in problems["00002.tar:007"]


def test_missing_shards_and_a_file_that_is_no_tar_are_one_line_errors(tmp_path):
    with pytest.raises(TurkclipError, match=r"^1 of 2 shards in .* not found \(first: .*00001.tar\)$"):
        _write_shard(tmp_path / "00000.tar", _good("0", 0))
        load_shard_set(str(tmp_path / "{00000..00001}.tar"), "tr", Preprocess(size=16))
    (tmp_path / "junk.tar").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(TurkclipError, match=r"no usable samples .*junk.tar: not a readable tar"):
        load_shard_set(str(tmp_path / "junk.tar"), "tr", Preprocess(size=16), skip_bad=True)


def test_shards_are_read_once_then_their_metadata_comes_from_the_cache(tmp_path, monkeypatch):
    _write_shard(tmp_path / "s.tar", _good("a", 0) + _good("b", 1))
    first = load_shard_set(str(tmp_path / "s.tar"), "tr", Preprocess(size=16), cache_dir=tmp_path / "c")
    monkeypatch.setattr(shard_set, "scan", lambda *a: pytest.fail("shards scanned again"))
    again = load_shard_set(str(tmp_path / "s.tar"), "tr", Preprocess(size=16), cache_dir=tmp_path / "c")
    assert again.filenames == first.filenames and again.captions == first.captions
    assert torch.equal(again.pixels[:], first.pixels[:])
    assert [p.name.split("-")[0] for p in (tmp_path / "c").iterdir()] == ["shardset"]  # no pixels on disk


def test_train_and_evaluate_from_shards(tmp_path, tiny_model, one_thread, capsys):
    _write_shard(tmp_path / "train-0.tar", sum((_good(f"t{i}", i, f"resim {i}") for i in range(6)), []))
    _write_shard(tmp_path / "train-1.tar", sum((_good(f"t{i}", i, f"resim {i}") for i in range(6, 10)), []))
    _write_shard(tmp_path / "val.tar", sum((_good(f"v{i}", 20 + i, f"başka {i}") for i in range(4)), []))
    out = tmp_path / "run"
    assert main(["train", "--model", str(tiny_model), "--shards", str(tmp_path / "train-{0..1}.tar"),
                 "--val-shards", str(tmp_path / "val.tar"), "--output", str(out), "--epochs", "1",
                 "--batch-size", "4", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_images"] == 10 and summary["val_images"] == 4 and summary["steps"] == 3  # the last batch is partial
    assert [r["kind"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())].count("val") == 1
    assert main(["evaluate", "--model", str(tiny_model), "--adapter", str(out), "--shards", str(tmp_path / "val.tar"),
                 "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_images"] == 4 and metrics["n_texts"] == 4 and metrics["shards"].endswith("val.tar")


def test_a_data_source_is_required_and_exclusive(tmp_path, tiny_model, capsys):
    assert main(["evaluate", "--model", str(tiny_model)]) == 1
    assert "--captions FILE with --images FOLDER, or --shards" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tiny_model), "--shards", "x.tar", "--captions", "c.csv"]) == 1
    assert capsys.readouterr().err.strip().endswith("give --shards, or --captions with --images, not both")


def test_index_from_shards_unpacks_new_images_then_indexes_the_folder(tmp_path, tiny_model, one_thread, capsys):
    _write_shard(tmp_path / "p-0.tar", _good("a/000", 0) + [("a/001.jpg", _jpeg(1))]  # no caption: fine for an index
                 + [("a/002.txt", b"resim yok")])  # no image: counted
    photos, index = tmp_path / "photos", tmp_path / "index"
    argv = ["index", str(photos), "--shards", str(tmp_path / "p-0.tar"), "--output", str(index),
            "--model", str(tiny_model), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "skipped shard sample p-0.tar:a/002: no image" in out and "2 photos unpacked from the shards, 0 already" in out
    assert sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.jpg")) == ["a/000.jpg", "a/001.jpg"]
    assert (photos / "a/001.jpg").read_bytes() == _jpeg(1)
    _write_shard(tmp_path / "p-1.tar", _good("b/003", 3))
    assert main(argv[:2] + ["--shards", str(tmp_path / "p-{0..1}.tar")] + argv[4:]) == 0
    out = capsys.readouterr().out
    assert "1 photos unpacked from the shards, 2 already there" in out and "3 photos (1 new" in out


def test_a_shard_key_that_leaves_the_folder_is_refused(tmp_path):
    _write_shard(tmp_path / "evil.tar", _good("../../escape", 0))
    with pytest.raises(TurkclipError, match="leaves the images root"):
        shards.unpack_images(str(tmp_path / "evil.tar"), tmp_path / "photos")
    assert not (tmp_path / "escape.jpg").exists()


def test_hostile_members_are_bad_samples_not_tracebacks_or_memory(tmp_path, monkeypatch):
    deep = b'{"caption": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    monkeypatch.setattr(shards, "MAX_TEXT_BYTES", len(deep) + 1)
    _write_shard(tmp_path / "00000.tar", _good("000", 0) + [
        ("001.jpg", _jpeg(1)), ("001.json", deep),  # nested past Python's recursion limit
        ("002.jpg", _jpeg(2)), ("002.json", b'{"caption": "yar\\ud800m"}'),  # a lone surrogate: not text
        ("003.jpg", _jpeg(3)), ("003.txt", b"x" * (len(deep) + 2)),  # over the caption limit: never read
        *_good("004", 4)])
    pattern = str(tmp_path / "00000.tar")
    data = load_shard_set(pattern, "tr", Preprocess(size=16), skip_bad=True, cache_dir=tmp_path / "c")
    assert data.filenames == ["000", "004"]
    problems = dict(data.skipped)
    assert problems["00000.tar:001"] == "caption unreadable (JSON nested too deeply to read)"
    assert problems["00000.tar:002"].startswith("caption unreadable (UnicodeEncodeError") and "surrogates" in \
        problems["00000.tar:002"]
    assert problems["00000.tar:003"] == f"too large: txt member of {len(deep) + 2:,} bytes (limit {len(deep) + 1:,})"
    with pytest.raises(TurkclipError, match=r"^3 of 5 samples .* \(first: 00000.tar:001: caption unreadable"):
        load_shard_set(pattern, "tr", Preprocess(size=16), cache_dir=tmp_path / "d")
