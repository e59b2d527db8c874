"""`turkclip evaluate` and `turkclip index` in 2 real CPU processes (torchrun, gloo) give what 1 process gives.

evaluate: 5 images (shares 3 + 2), 8 Turkish captions, 1 English caption (rank 1 embeds no English caption).
index: 12 photos and a broken file in chunks of 4 (4, 4, 4, 1: the last chunk leaves rank 1 nothing), killed
mid-run (SIGKILL of every process), resumed under 2 processes, then run again with nothing changed.
The 2-process training run's validation is compared in tests/test_multiprocess.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import slowed
from conftest import write_captioned_images
from test_multiprocess import TORCHRUN, workers
from turkclip.search import photo_index
from turkclip.search.photo_index import build_index, open_index
from turkclip_train.cli import main

pytestmark = pytest.mark.slow  # four 2-process launches


def _torchrun(argv: list[str], delay: float = 0) -> subprocess.Popen:
    """`turkclip ARGV` in 2 processes; `delay`: seconds of pause after each chunk an index run saves."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    launcher = TORCHRUN
    if delay:  # tests/slowed.py instead of `-m turkclip_train.cli`
        launcher = [*TORCHRUN[:-2], *slowed.command(delay, "turkclip.search.photo_index:_save_chunk")]
    return subprocess.Popen([sys.executable, *launcher, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return out


def test_evaluate_in_two_processes_equals_one(tiny_model, tmp_path, capsys):
    captions, images = write_captioned_images(tmp_path, 5, lambda i: [f"kırmızı bir şey {i}", f"İkinci açıklama {i}"][
                                                              : 1 + (i % 2) + (i == 4)], split=lambda i: "test")
    english = tmp_path / "english.txt"
    english.write_text("03.jpg#0\ta red thing number three\n", encoding="utf-8")

    def argv(out: Path) -> list[str]:
        return ["evaluate", "--model", str(tiny_model), "--captions", str(captions), "--images", str(images),
                "--english-captions", str(english), "--precision", "fp32", "--cache-dir", "none", "--json", str(out)]

    two = _torchrun(argv(tmp_path / "two.json"))
    assert main(argv(tmp_path / "one.json")) == 0  # meanwhile, one process
    capsys.readouterr()
    out = _finish(two)
    assert out.count("metrics written to") == 1 and out.count("text→image") == 2  # one report: Turkish + English rows
    one, two = (json.loads((tmp_path / f"{n}.json").read_text(encoding="utf-8")) for n in ("one", "two"))
    assert (one["n_images"], one["n_texts"], one["english"]["n_texts"]) == (5, 8, 1)
    for a, b in ((one, two), (one["english"], two["english"])):
        for direction in ("text_to_image", "image_to_text"):
            for key, value in a[direction].items():
                assert b[direction][key] == pytest.approx(value, abs=1e-6), (direction, key)
        assert b["legacy_in_batch_top1"] == pytest.approx(a["legacy_in_batch_top1"], abs=1e-6)
        assert (b["n_images"], b["n_texts"], b["precision"]) == (a["n_images"], a["n_texts"], a["precision"])


def test_index_in_two_processes_resumes_after_sigkill_and_equals_one(tiny_model, tiny_images, tmp_path):
    (tiny_images / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "idx"
    argv = ["index", str(tiny_images), "--output", str(out), "--model", str(tiny_model), "--chunk-size", "4",
            "--precision", "fp32", "--no-progress"]
    first = _torchrun(argv, delay=1.5)
    deadline = time.monotonic() + 180
    while not list((out / "chunks").glob("*.safetensors")) or len(workers(first.pid)) < 2:  # a chunk saved
        assert first.poll() is None, first.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no chunk written in 180 s"
        time.sleep(0.05)
    for pid in [*workers(first.pid).values(), first.pid]:  # the whole job dies at once, as in a crash
        os.kill(pid, signal.SIGKILL)
    first.communicate(timeout=30)
    saved = len(list((out / "chunks").glob("*.safetensors")))
    assert 1 <= saved < 4

    resumed = _finish(_torchrun(argv))
    assert f"{4 * saved} from an interrupted run" in resumed and resumed.count("skipped broken.jpg") == 1
    reference = build_index(tiny_images, tmp_path / "reference", str(tiny_model), chunk_size=4, progress=False)
    two, one = open_index(out), reference.index
    assert two.paths == one.paths == [f"{i:02d}.jpg" for i in range(12)]
    assert two.bad == one.bad  # the same file, the same wording
    assert torch.allclose(two.embeddings, one.embeddings, atol=1e-3)
    assert not (out / "chunks").exists()

    stamp = (out / photo_index.INDEX_FILE).stat().st_mtime_ns
    again = _finish(_torchrun(argv))
    assert "0 new, 0 changed, 0 removed, 12 unchanged" in again and again.count(str(out)) == 1
    assert (out / photo_index.INDEX_FILE).stat().st_mtime_ns == stamp  # nothing rewritten
