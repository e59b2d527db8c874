"""Hostile photo folders: no file stops `turkclip index`; what is left out is reported, and names are printed safe.

Symlink loops, links to nothing, a folder that cannot be read, file and folder names that are not UTF-8
(os.fsencode bytes), a FIFO named .jpg, names holding newlines and terminal escape sequences.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from turkclip.search.photo_files import printable, scan_photos
from turkclip.search.photo_index import build_index, open_index
from turkclip_train.cli import main

NEWLINE_NAME = "two\nlines.jpg"
ESCAPE_NAME = "red\x1b[31malert\x1b[0m.jpg"


def _jpeg(path: Path, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


@pytest.fixture
def hostile(tiny_images, monkeypatch) -> Path:
    """tiny_images (12 JPEGs) plus every kind of entry a scan must survive. The folder `locked` cannot be listed
    (as after chmod 0 for anyone but root: os.scandir raises PermissionError)."""
    root = tiny_images
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(os.fsdecode(path)).name == "locked":
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    (root / "loop.jpg").symlink_to(root / "loop.jpg")  # a link to itself
    (root / "a.jpg").symlink_to(root / "b.jpg")  # a → b → a
    (root / "b.jpg").symlink_to(root / "a.jpg")
    (root / "gone.jpg").symlink_to(root / "nowhere.jpg")
    (root / "folder-link").symlink_to(root / "locked", target_is_directory=True)
    (root / "locked").mkdir()
    _jpeg(root / "locked" / "hidden-from-us.jpg")
    os.mkfifo(root / "pipe.jpg")  # opening it would block forever
    raw = os.fsencode(str(root)) + b"/caf\xe9.jpg"  # Latin-1 é: not UTF-8
    shutil.copy(root / "00.jpg", raw)
    os.mkdir(os.fsencode(str(root)) + b"/d\xfcn")
    shutil.copy(root / "01.jpg", os.fsencode(str(root)) + b"/d\xfcn/x.jpg")
    shutil.copy(root / "02.jpg", root / NEWLINE_NAME)
    shutil.copy(root / "03.jpg", root / ESCAPE_NAME)
    return root


def test_scan_reports_every_entry_it_leaves_out_and_goes_on(hostile):
    scan = scan_photos(hostile)
    skipped = dict(scan.skipped)
    assert [p.path for p in scan.photos] == sorted([f"{i:02d}.jpg" for i in range(12)] + [NEWLINE_NAME, ESCAPE_NAME])
    assert skipped["loop.jpg"] == skipped["a.jpg"] == skipped["b.jpg"] == "link loop"
    assert skipped["gone.jpg"] == "link to nothing"
    assert skipped["pipe.jpg"] == "not a regular file"
    assert "not followed" in skipped["folder-link"]
    assert "not UTF-8" in skipped["caf\udce9.jpg"] and "not UTF-8" in skipped["d\udcfcn"]
    assert skipped["locked"] == "folder cannot be read (Permission denied)"
    assert len(scan.skipped) == 9


def test_index_of_a_hostile_folder_finishes_and_searches(tiny_model, hostile, tmp_path):
    report = build_index(hostile, tmp_path / "idx", str(tiny_model), progress=False)
    idx = open_index(tmp_path / "idx")
    assert NEWLINE_NAME in idx.paths and ESCAPE_NAME in idx.paths  # odd but valid names are indexed
    assert len(report.skipped) == 9 and not report.bad


def test_cli_prints_odd_names_escaped_one_line_each(tiny_model, hostile, tmp_path, capsys):
    assert main(["index", str(hostile), "--output", str(tmp_path / "idx"), "--model", str(tiny_model),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\udce9" not in out
    lines = out.splitlines()
    assert "left out caf\\xe9.jpg: file name is not UTF-8: rename it to index it" in lines
    assert "left out loop.jpg: link loop" in lines
    assert lines[-1].startswith(f"{tmp_path / 'idx'}: 14 photos") and "left out)" in lines[-1]
    assert main(["search", str(tmp_path / "idx"), "kırmızı", "-k", "14"]) == 0
    out = capsys.readouterr().out
    assert "two\\nlines.jpg" in out and "red\\x1b[31malert\\x1b[0m.jpg" in out and "\x1b" not in out
    assert len(out.splitlines()) == 14


@pytest.mark.parametrize("name, shown", [
    ("plain/ğüşİ.jpg", "plain/ğüşİ.jpg"),
    ("a\nb\r\tc.jpg", "a\\nb\\r\\tc.jpg"),
    ("\x1b]0;owned\x07.jpg", "\\x1b]0;owned\\x07.jpg"),
    ("evil\u202egpj.exe", "evil\\u202egpj.exe"),  # a right-to-left override that would show "exe.jpg"
    ("line\u2028sep.jpg", "line\\u2028sep.jpg"),
    (os.fsdecode(b"caf\xe9.jpg"), "caf\\xe9.jpg"),
    ("\ud800.jpg", "\\ud800.jpg"),
])
def test_printable_names_cannot_move_the_cursor_or_break_lines(name, shown):
    assert printable(name) == shown
