"""The cache stays bounded: entries listed with sizes and ages, pruned by size (least recently used first) or age,
a size cap applied on every write, and nothing but turkclip's own entries ever removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from turkclip import cache, cache_folder
from turkclip_train.cli import main

KEYS = [f"{i:024x}" for i in range(4)]


def _entries(folder, ages_s=(400, 300, 200, 100), size=1000):
    """Four 1000-float entries used `ages_s` seconds ago (oldest first), plus a file turkclip did not write."""
    now = time.time()
    for key, age in zip(KEYS, ages_s):
        cache.save_array(folder, "image-embeds", key, torch.zeros(size // 4, 1))
        path = folder / f"image-embeds-{key}.npy"
        os.utime(path, (now - age, now - age))
    (folder / "notes.txt").write_text("mine")
    return now


def test_prune_by_size_removes_the_least_recently_used_and_by_age_the_old(tmp_path, monkeypatch):
    monkeypatch.setenv("TURKCLIP_CACHE_MAX_SIZE", "0")  # no cap while the entries are made
    now = _entries(tmp_path)
    found = cache_folder.entries(tmp_path)
    assert [e.name for e in found] == [f"image-embeds-{k}" for k in KEYS] and all(e.size > 1000 for e in found)
    removed = cache_folder.prune(tmp_path, limit=2 * found[0].size + 10, now=now)
    assert [e.name for e in removed] == [f"image-embeds-{k}" for k in KEYS[:2]]
    assert [e.name for e in cache_folder.prune(tmp_path, older_than=150, now=now)] == [f"image-embeds-{KEYS[2]}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"image-embeds-{KEYS[3]}.npy", "notes.txt"]


def test_every_write_keeps_the_cache_under_its_cap_and_a_read_counts_as_use(tmp_path, monkeypatch):
    monkeypatch.setenv("TURKCLIP_CACHE_MAX_SIZE", "0")
    _entries(tmp_path)
    one = cache_folder.entries(tmp_path)[0].size
    assert cache.load_array(tmp_path, "image-embeds", KEYS[0]) is not None  # the oldest, used again now
    monkeypatch.setenv("TURKCLIP_CACHE_MAX_SIZE", str(3 * one + 10))
    cache.save_array(tmp_path, "image-embeds", "f" * 24, torch.zeros(250, 1))
    names = {e.name for e in cache_folder.entries(tmp_path)}
    assert names == {f"image-embeds-{KEYS[0]}", f"image-embeds-{KEYS[3]}", "image-embeds-" + "f" * 24}
    assert (tmp_path / "notes.txt").exists()


def test_the_cap_default_and_sizes_and_ages_read_as_people_write_them(monkeypatch):
    monkeypatch.delenv("TURKCLIP_CACHE_MAX_SIZE", raising=False)
    assert cache_folder.max_size() == 20 * 10**9
    assert [cache_folder.parse_size(t) for t in ("5GB", "500 MB", "1.5T", "2GiB", "1024")] == [
        5 * 10**9, 5 * 10**8, 15 * 10**11, 2 * 2**30, 1024]
    assert cache_folder.parse_age("30d") == 30 * 86400 and cache_folder.parse_age("12h") == 12 * 3600
    for bad in ("lots", "5XB", ""):
        with pytest.raises(ValueError, match="is not a size"):
            cache_folder.parse_size(bad)


def test_cache_list_and_prune_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TURKCLIP_CACHE_MAX_SIZE", "0")
    _entries(tmp_path)
    assert main(["cache", "list", "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"image-embeds-{KEYS[3]}") and "ago" in lines[0] and "KB" in lines[0]
    assert lines[-1].startswith("4 entries, ") and "cap: none" in lines[-1]
    assert main(["cache", "prune", "--older-than", "250s", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("removed 2 entries")
    assert main(["cache", "prune", "--max-size", "0", "--cache-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    for argv, phrase in ((["cache", "prune"], "say what to remove"),
                         (["cache", "prune", "--max-size", "lots"], "'lots' is not a size")):
        assert main(argv + ["--cache-dir", str(tmp_path)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and phrase in err[0], err


def test_cache_commands_answer_without_loading_torch(tmp_path):
    run = ("import json, sys; from turkclip_train.cli import main; code = main(sys.argv[1:]);"
           " print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))")
    for argv, code in ((["cache", "list"], 0), (["cache", "prune", "--max-size", "lots"], 1)):
        done = subprocess.run([sys.executable, "-c", run, *argv, "--cache-dir", str(tmp_path)], capture_output=True,
                              text=True, timeout=120)
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"code": code, "torch": False}, done.stderr
