"""Damaged index folders, two writers, a full disk: every damage is found, said in one line, and repaired by the
next `turkclip index`; nothing is lost.

Bit flips in each array of the index file (embeddings, path table, sizes, mtimes) and in its header, a truncated,
an empty and a foreign file, a damaged chunk of an interrupted run, damaged and foreign FAISS files, a read-only
index folder for FAISS, a second writer, and ENOSPC from the writer.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import slowed
from turkclip.errors import TurkclipError
from turkclip.search import index_file, photo_index
from turkclip.search.photo_index import INDEX_FILE, LOCK_FILE, build_index, open_index
from turkclip.writer_lock import WriterLock
from turkclip_train.cli import main

ARRAYS = ("embeddings", "paths", "sizes", "mtimes")


@pytest.fixture(scope="module")
def built(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """(photos, index) built once: tests copy the index and damage the copy."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("integrity")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)).save(photos / f"{i:02d}.jpg")
    build_index(photos, root / "index", str(tiny_model), progress=False)
    return photos, root / "index"


@pytest.fixture
def copy(built, tmp_path) -> Path:
    shutil.copytree(built[1], tmp_path / "index")
    return tmp_path / "index"


def _span(path: Path, tensor: str) -> tuple[int, int]:
    """Where `tensor`'s bytes lie in a safetensors file: (start, end) offsets."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    start, end = json.loads(data[8 : 8 + length])[tensor]["data_offsets"]
    return 8 + length + start, 8 + length + end


def _flip(path: Path, offset: int, bit: int = 0x10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= bit
    path.write_bytes(bytes(data))


def _damage(path: Path, how: str) -> None:
    if how in ARRAYS:
        start, end = _span(path, how)
        _flip(path, (start + end) // 2)
    elif how == "header":  # a digit of the generation: the header stays valid JSON, its checksum does not match
        data = path.read_bytes()
        at = data.index(b'generation\\": ') + len(b'generation\\": ')
        _flip(path, at, 0x02)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "foreign":
        from safetensors.torch import save_file

        save_file({"embeddings": torch.zeros(2, 4)}, path, metadata={"other": "tool"})


@pytest.mark.parametrize("how", [*ARRAYS, "header", "truncated", "empty", "foreign"])
def test_damaged_index_is_one_line_and_rebuilt_by_the_next_run(built, copy, tiny_model, how, capsys):
    photos, reference = built
    _damage(copy / INDEX_FILE, how)
    with pytest.raises(TurkclipError) as e:
        open_index(copy)
    assert "is damaged" in str(e.value) and f"--output {copy}" in str(e.value) and "\n" not in str(e.value)
    assert main(["search", str(copy), "kedi"]) == 1  # the CLI: one line, no traceback
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged" in err

    header_lost = how in ("header", "truncated", "empty", "foreign")
    if header_lost:  # the file cannot say which model built it: the user must
        with pytest.raises(TurkclipError, match="does not say which model built it"):
            build_index(photos, copy, progress=False)
    report = build_index(photos, copy, str(tiny_model) if header_lost else None, progress=False)
    assert report.repaired and "is damaged" in report.repaired[0] and "embedded again" in report.repaired[0]
    assert report.added == 10 and report.kept == 0  # nothing kept from the damaged file
    repaired, clean = open_index(copy), open_index(reference)
    assert repaired.paths == clean.paths
    assert torch.allclose(repaired.embeddings, clean.embeddings, atol=1e-3)
    again = build_index(photos, copy, progress=False)  # now nothing changed
    assert (again.added, again.kept, again.repaired) == (0, 10, [])


def test_index_without_checksums_from_an_older_turkclip_is_reembedded(built, copy):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(copy / INDEX_FILE, "pt") as f:
        meta = json.loads(f.metadata()["turkclip"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.pop("tensors_sha256")
    save_file(tensors, copy / INDEX_FILE, metadata={"turkclip": json.dumps(dict(meta, version=1))})
    with pytest.raises(TurkclipError, match="no checksum"):
        open_index(copy)
    report = build_index(built[0], copy, progress=False)  # its model is still known
    assert report.added == 10 and open_index(copy).paths == open_index(built[1]).paths


def test_damaged_chunk_of_an_interrupted_run_is_embedded_again(built, tiny_model, tmp_path, monkeypatch):
    photos = built[0]
    out = tmp_path / "index"
    saved = []
    real = photo_index._save_chunk

    def dies_after_three(*args):
        if len(saved) == 3:
            raise KeyboardInterrupt  # the run is killed while embedding the fourth chunk
        real(*args)
        saved.append(args[0])

    monkeypatch.setattr(photo_index, "_save_chunk", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        build_index(photos, out, str(tiny_model), chunk_size=2, progress=False)
    monkeypatch.undo()
    _damage(saved[1], "embeddings")
    report = build_index(photos, out, chunk_size=2, progress=False)
    assert len(report.repaired) == 1 and saved[1].name in report.repaired[0]
    assert report.resumed == 4 and report.added == 6  # chunks 0 and 2 kept; chunk 1's photos embedded again
    assert torch.allclose(open_index(out).embeddings, open_index(built[1]).embeddings, atol=1e-3)


def test_faiss_file_is_keyed_by_the_vectors_and_rebuilt_when_damaged(copy, monkeypatch, capsys):
    faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install 'turkclip[app]')")
    from turkclip.search import photo_search

    builds = []
    real_build = photo_search.build_ivf
    monkeypatch.setattr(photo_search, "build_ivf", lambda *a: builds.append(1) or real_build(*a))
    idx = open_index(copy)
    first = photo_search.Searcher(idx.embeddings, use_faiss=True, saved_in=copy)
    [saved] = copy.glob("faiss-ivf-*.index")
    photo_search.Searcher(idx.embeddings, use_faiss=True, saved_in=copy)
    assert len(builds) == 1  # read back, not rebuilt

    other = idx.embeddings.clone()
    other[0] = -other[0]  # the same number of vectors, not the same vectors
    assert photo_search.Searcher(other, use_faiss=True, saved_in=copy).kind == "faiss-ivf" and len(builds) == 2
    assert saved not in copy.glob("faiss-ivf-*.index")  # replaced by the file for the new vectors

    [saved] = copy.glob("faiss-ivf-*.index")
    _flip(saved, saved.stat().st_size // 2)
    searcher = photo_search.Searcher(other, use_faiss=True, saved_in=copy)
    assert len(builds) == 3 and "is damaged" in capsys.readouterr().err
    scores, rows = searcher.search(other[:1].numpy(), 3)
    assert rows[0][0] == 0 and scores[0][0] == pytest.approx(1.0, abs=1e-3)

    def read_only(index, path):
        raise RuntimeError(f"Error in faiss::FileIOWriter: could not open {path} for writing: Read-only file system")

    for saved in copy.glob("faiss-ivf-*.index"):
        saved.unlink()
    monkeypatch.setattr(faiss, "write_index", read_only)
    assert photo_search.Searcher(other, use_faiss=True, saved_in=copy).kind == "faiss-ivf"  # still serves
    err = capsys.readouterr().err
    assert "could not save the FAISS index" in err and "Read-only file system" in err and err.count("\n") == 1
    assert not list(copy.glob("*faiss*"))
    assert first.kind == "faiss-ivf"


def test_second_writer_waits_then_refuses_in_one_line(built, copy, monkeypatch):
    monkeypatch.setattr("turkclip.writer_lock.WAIT_S", 0.3)
    with WriterLock(copy / LOCK_FILE, "holder"):  # another process's lock (another open file: flock conflicts)
        start = time.monotonic()
        with pytest.raises(TurkclipError, match=rf"another `turkclip index` \(process {os.getpid()}\) is writing"):
            build_index(built[0], copy, progress=False)
        assert time.monotonic() - start >= 0.3  # it waited before refusing
    assert build_index(built[0], copy, progress=False).kept == 10  # free again


def test_lock_left_by_a_dead_process_is_taken_over(built, copy):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (copy / LOCK_FILE).write_text(f"{dead.pid}\n")
    assert build_index(built[0], copy, progress=False).kept == 10
    assert (copy / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_two_index_runs_on_one_output_never_collide(built, tiny_model, tmp_path):
    out = tmp_path / "index"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    argv = ["index", str(built[0]), "--output", str(out), "--model", str(tiny_model), "--chunk-size", "2",
            "--no-progress"]
    slow = subprocess.Popen([sys.executable, *slowed.command(4.0, "turkclip.search.photo_index:_save_chunk"), *argv],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "chunks").glob("*.safetensors")):
            assert slow.poll() is None, slow.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "turkclip_train.cli", *argv], env=env, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert second.stderr.count("\n") == 1 and f"(process {slow.pid}) is writing {out}" in second.stderr
        _, err = slow.communicate(timeout=120)
    finally:
        if slow.poll() is None:
            slow.send_signal(signal.SIGKILL)
            slow.wait()
    assert slow.returncode == 0, err
    assert open_index(out).paths == open_index(built[1]).paths


def test_full_disk_is_one_line_and_keeps_the_previous_index(built, tiny_model, tmp_path, capsys, monkeypatch):
    photos = shutil.copytree(built[0], tmp_path / "photos")
    build_index(photos, tmp_path / "index", str(tiny_model), progress=False)
    before = (tmp_path / "index" / INDEX_FILE).read_bytes()
    (photos / "00.jpg").write_bytes((photos / "01.jpg").read_bytes())  # changed: the update writes a chunk, an index
    argv = ["index", str(photos), "--output", str(tmp_path / "index"), "--no-progress"]
    real = index_file.save_file

    def full(tensors, path, **kw):
        if Path(path).name.startswith(f".{INDEX_FILE}.") == (fails == "index"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tensors, path, **kw)

    monkeypatch.setattr(index_file, "save_file", full)
    for fails, kept in (("chunk", "chunks written so far are kept"), ("index", "previous index is untouched")):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "(No space left on device)" in err and kept in err, err
        assert (tmp_path / "index" / INDEX_FILE).read_bytes() == before  # the previous index is whole
    monkeypatch.undo()
    monkeypatch.setattr("turkclip.whole_file.shutil.disk_usage", lambda p: SimpleNamespace(free=1))
    assert main(argv) == 1
    assert "no space left on the device" in capsys.readouterr().err  # refused before anything is written
    monkeypatch.undo()
    report = build_index(photos, tmp_path / "index", progress=False)  # space again: the run finishes
    assert (report.resumed, report.added, report.changed) == (1, 0, 0)  # the chunk written before the index failed
    assert torch.equal(open_index(tmp_path / "index").embeddings[0], open_index(built[1]).embeddings[1])


def test_a_crafted_index_folder_cannot_make_index_write_or_delete_elsewhere(built, copy, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "model.safetensors").write_bytes(b"weights")
    (precious / "notes.txt").write_text("keep me")
    (copy / LOCK_FILE).unlink()
    (copy / LOCK_FILE).symlink_to(precious / "notes.txt")  # a lock through a link would truncate its target
    with pytest.raises(TurkclipError, match=r"cannot write in .*\.turkclip\.lock"):
        build_index(built[0], copy, progress=False)
    (copy / LOCK_FILE).unlink()
    (copy / "chunks").symlink_to(precious, target_is_directory=True)  # chunks are deleted when a run finishes
    with pytest.raises(TurkclipError, match="is not a plain folder"):
        build_index(built[0], copy, progress=False)
    assert (precious / "notes.txt").read_text() == "keep me" and (precious / "model.safetensors").exists()
    (copy / "chunks").unlink()

    (copy / "chunks").mkdir()  # what a kill in the middle of writes leaves, and a file that is not ours
    (copy / "chunks" / ".chunk-g1-000003.safetensors.abc.tmp").write_bytes(b"half")
    (copy / f".{INDEX_FILE}.xyz.tmp").write_bytes(b"half")
    (copy / "chunks" / "mine.txt").write_text("not a chunk")
    _damage(copy / INDEX_FILE, "sizes")  # so that the run writes a new index
    assert build_index(built[0], copy, progress=False).added == 10
    assert sorted(p.name for p in copy.rglob("*")) == sorted([LOCK_FILE, INDEX_FILE, "chunks", "mine.txt"])
