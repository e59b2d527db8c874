"""Training in 2 real processes on CPU (gloo), launched the way the README says: accelerate and torchrun.

17 train images at 3 per process: global batches of 6, 6 and 5, so each epoch ends with a partial batch
split 3 + 2 (before the fix, one rank got a shorter batch and the feature gather aborted). Runs:

* `uninterrupted`: `accelerate launch --multi_gpu --num_processes 2 --num_machines 1` (the verified CPU command);
* `chain`: torchrun; Ctrl-C (SIGINT) reaches rank 1 only → both ranks stop at the same step, checkpoint, exit;
  resumed → SIGKILL of every process mid-epoch 2; resumed again → finishes;
* `single`: one process, batch 6 (the same global batch), in this process.

All three must end with the same adapter (dropout 0, fp32), write every log record once and validate once
per epoch. The chain's first two launches run through tests/slowed.py (a pause after each checkpoint) so the
signals land mid-run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import slowed
from conftest import write_captioned_images
from turkclip_train import checkpoint
from turkclip_train.cli import main

pytestmark = pytest.mark.slow  # four 2-process launches: about a minute on 2 idle cores

EPOCHS, STEPS_PER_EPOCH = 2, 3
ACCELERATE = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "turkclip_train.cli"]
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "turkclip_train.cli"]


def _write_data(root: Path) -> tuple[Path, Path]:
    return write_captioned_images(root, 20, lambda i: [f"kırmızı bir şey numara {i}", f"İkinci açıklama {i}"],
                                  split=lambda i: "train" if i < 17 else "val")


def workers(launcher: int) -> dict[int, int]:
    """{rank: pid} of the processes a launcher started (its children, found by their RANK variable)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        rank = [e for e in environ if e.startswith(b"RANK=")]
        if ppid == launcher and rank:
            found[int(rank[0][5:])] = int(stat.parent.name)
    return found


class Launch:
    """One multi-process launch (`launcher` + `turkclip train` flags); output to `label`.log/.err."""

    def __init__(self, launcher: list[str], argv: list[str], output: Path, label: str, delay: float = 0):
        self.output, self.err = output, output.parent / f"{label}.err"
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
        if delay:  # the launcher runs tests/slowed.py instead of `-m turkclip_train.cli`
            launcher = [*launcher[:-2], *slowed.command(delay, "turkclip_train.checkpoint:save")]
        with (output.parent / f"{label}.log").open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, *launcher, *argv], stdout=out, stderr=err, env=env)

    def wait(self) -> int:
        return self.proc.wait(timeout=240)

    def position(self) -> dict | None:
        try:
            return torch.load(self.output / checkpoint.FILENAME, map_location="cpu", weights_only=True)["position"]
        except Exception:  # not written yet
            return None

    def workers(self) -> dict[int, int]:
        return workers(self.proc.pid)

    def wait_for(self, ready, what: str) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.output.name} ended before {what}: {self.err.read_text()[-3000:]}"
            position = self.position()
            if position is not None and ready(position) and len(self.workers()) == 2:
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.output.name}: no checkpoint for {what}")


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("multiprocess")
    captions, images = _write_data(root)

    def argv(name: str, batch: int, *extra: str) -> list[str]:
        return ["train", "--model", str(tiny_model), "--captions", str(captions), "--images", str(images),
                "--output", str(root / name), "--epochs", str(EPOCHS), "--batch-size", str(batch), "--lr", "5e-3",
                "--lora-r", "4", "--lora-dropout", "0", "--precision", "fp32", "--cache-dir", "none",
                "--checkpoint-every", "1", "--no-progress", *extra]

    launches = []
    threads = torch.get_num_threads()
    try:
        uninterrupted = Launch(ACCELERATE, argv("uninterrupted", 3), root / "uninterrupted", "uninterrupted")
        chain = Launch(TORCHRUN, argv("chain", 3), root / "chain", "chain-1", delay=0.5)
        launches += [uninterrupted, chain]
        chain.wait_for(lambda p: p["global_step"] >= 1, "Ctrl-C")
        os.kill(chain.workers()[1], signal.SIGINT)  # rank 1 only: rank 0 must stop with it, not block in the gather
        interrupted = {"exit": chain.wait(), "position": chain.position(), "stderr": chain.err.read_text()}

        chain = Launch(TORCHRUN, argv("chain", 3, "--resume"), root / "chain", "chain-2", delay=0.5)
        launches.append(chain)
        torch.set_num_threads(1)
        assert main(argv("single", 6)) == 0  # meanwhile, one process with the same global batch
        chain.wait_for(lambda p: p["epoch"] == 1 and p["step"] >= 1, "SIGKILL")
        for pid in [*chain.workers().values(), chain.proc.pid]:  # the whole job dies at once, as in a crash
            os.kill(pid, signal.SIGKILL)
        chain.wait()
        killed = chain.position()

        chain = Launch(TORCHRUN, argv("chain", 3, "--resume"), root / "chain", "chain-3")
        launches.append(chain)
        statuses = {"uninterrupted": uninterrupted.wait(), "chain": chain.wait()}
        errors = {"uninterrupted": uninterrupted.err.read_text(), "chain": chain.err.read_text()}
        yield SimpleNamespace(root=root, argv=argv, interrupted=interrupted, killed=killed, statuses=statuses,
                              errors=errors)
    finally:
        torch.set_num_threads(threads)
        for launch in launches:
            if launch.proc.poll() is None:
                for pid in launch.workers().values():
                    os.kill(pid, signal.SIGKILL)
                launch.proc.kill()
                launch.proc.wait()


def _adapter(output: Path) -> dict[str, torch.Tensor]:
    return load_file(output / "adapter_model.safetensors")


def _records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_like_one_with_the_same_global_batch(runs):
    """The partial last batch (3 + 2 items) runs on both ranks to the end of every epoch, and the adapter is
    the one process's with batch 6."""
    assert runs.statuses["uninterrupted"] == 0, runs.errors["uninterrupted"][-3000:]
    two, one = _adapter(runs.root / "uninterrupted"), _adapter(runs.root / "single")
    assert two.keys() == one.keys()
    assert any(one[n].abs().max() > 1e-3 for n in one)  # training moved the adapter
    for name in one:
        assert torch.allclose(two[name], one[name], atol=1e-5), name
    summary = json.loads((runs.root / "uninterrupted" / "summary.json").read_text())
    assert summary["steps"] == EPOCHS * STEPS_PER_EPOCH


def test_one_writer_one_validation_per_epoch(runs):
    for name in ("uninterrupted", "chain"):
        records = _records(runs.root / name)
        keys = [(r["kind"], r["step"]) for r in records]
        assert keys == [(r["kind"], r["step"]) for r in _records(runs.root / "single")], name  # nothing doubled
        assert [r["epoch"] for r in records if r["kind"] == "val"] == list(range(1, EPOCHS + 1)), name
    assert "Traceback" not in runs.errors["uninterrupted"]


def test_validation_in_two_processes_gives_one_process_metrics(runs):
    """Validation embeds a share per process (3 val images: 2 + 1; 6 captions: 3 + 3), is logged once per epoch, and
    its metrics are the one process's (the adapters agree to 1e-5, and the ranks are computed once, by rank 0)."""
    two = [r for r in _records(runs.root / "uninterrupted") if r["kind"] == "val"]
    one = [r for r in _records(runs.root / "single") if r["kind"] == "val"]
    assert [r["epoch"] for r in two] == [r["epoch"] for r in one] == list(range(1, EPOCHS + 1))
    for a, b in zip(one, two):
        assert (b["n_images"], b["n_texts"]) == (a["n_images"], a["n_texts"]) == (3, 6)
        for direction in ("text_to_image", "image_to_text"):
            for key in ("R@1", "R@5", "R@10", "mean_rank", "median_rank"):
                assert b[direction][key] == pytest.approx(a[direction][key], abs=1e-6), (direction, key)


def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step(runs):
    interrupted = runs.interrupted
    assert interrupted["exit"] != 0 and interrupted["position"] is not None
    step = interrupted["position"]["global_step"]
    assert 0 < step < EPOCHS * STEPS_PER_EPOCH
    # The ranks left with 130 (torchrun names the first one's exit code; it may SIGTERM the other, which is
    # already done by then) after rank 0 alone had printed the message.
    assert "exitcode  : 130" in interrupted["stderr"], interrupted["stderr"][-3000:]
    assert interrupted["stderr"].count(f"interrupted: checkpoint saved at step {step};") == 1
    assert not re.search(r'File ".*turkclip', interrupted["stderr"])  # torchrun prints its own traceback, we none


def test_sigkill_of_two_processes_then_resume_equals_uninterrupted(runs):
    assert runs.killed["epoch"] == 1 and 0 < runs.killed["step"] < STEPS_PER_EPOCH, runs.killed
    assert runs.statuses["chain"] == 0, runs.errors["chain"][-3000:]
    resumed, reference = _adapter(runs.root / "chain"), _adapter(runs.root / "uninterrupted")
    for name in reference:
        assert torch.allclose(resumed[name], reference[name], atol=1e-6), name


def test_resume_with_another_number_of_processes_is_refused(runs, capsys):
    """2 processes checkpointed; 1 resuming would rebuild the schedule for twice the steps: refuse it."""
    before = (runs.root / "chain" / checkpoint.FILENAME).read_bytes()
    assert main(runs.argv("chain", 3, "--resume")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "number of processes 1 (was 2" in err[0], err
    assert (runs.root / "chain" / checkpoint.FILENAME).read_bytes() == before


def test_bank_negatives_in_two_processes_equal_one(runs):
    """--negatives bank: every process scores the whole global batch against the bank (the captions and their
    image indices are gathered), so 2 processes × 3 items end with the adapter of 1 process × 6."""
    bank = ("--lora-towers", "text", "--negatives", "bank")
    two = Launch(ACCELERATE, runs.argv("bank-two", 3, *bank), runs.root / "bank-two", "bank-two")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(runs.argv("bank-one", 6, *bank)) == 0
    finally:
        torch.set_num_threads(threads)
    assert two.wait() == 0, two.err.read_text()[-3000:]
    a, b = _adapter(runs.root / "bank-two"), _adapter(runs.root / "bank-one")
    assert a.keys() == b.keys() and any(b[n].abs().max() > 1e-3 for n in b)
    for name in b:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
