"""Interrupted training resumes exactly: SIGKILL mid-epoch and Ctrl-C both end where an uninterrupted run ends.

Two real `python -m turkclip_train.cli train` subprocesses start together: one is killed with
SIGKILL once it has checkpointed in the middle of epoch 2, the other gets SIGINT (Ctrl-C) in
epoch 1. They run through tests/slowed.py, which pauses after each checkpoint, so the signals land
mid-run. Both are resumed with --resume and compared with an uninterrupted run of the same flags
and seed. LoRA dropout is on, so they only match if the RNG state is restored too.
"""

from __future__ import annotations

import json
import os
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
from turkclip.errors import TurkclipError
from turkclip_train import checkpoint
from turkclip_train.cli import main

STEPS_PER_EPOCH, EPOCHS = 4, 3  # 9 train images, batch 2: the last batch of one is dropped


def _write_data(root: Path) -> tuple[Path, Path]:
    # train only: the latest adapter is kept, so it is the one resuming produced
    return write_captioned_images(root, 9, lambda i: [f"kırmızı bir şey numara {i}", f"İkinci açıklama {i}"])


def _train_argv(model: Path, captions: Path, images: Path, output: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(model), "--captions", str(captions), "--images", str(images), "--output", str(output),
            "--epochs", str(EPOCHS), "--batch-size", "2", "--lora-r", "4", "--lora-dropout", "0.3", "--seed", "3",
            "--precision", "fp32", "--cache-dir", "none", "--checkpoint-every", "1", "--no-progress", *extra]


class Run:
    """One training subprocess writing into `output`; its stdout and stderr go to `label`.log/.err beside it."""

    def __init__(self, argv: list[str], output: Path, label: str, delay: float = 0):
        self.output, self.log, self.err = output, output.parent / f"{label}.log", output.parent / f"{label}.err"
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
        cli = slowed.command(delay, "turkclip_train.checkpoint:save") if delay else ["-m", "turkclip_train.cli"]
        with self.log.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, *cli, *argv], stdout=out, stderr=err, env=env)

    def wait(self) -> int:
        return self.proc.wait(timeout=180)

    def stdout(self) -> str:
        return self.log.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def position(self) -> dict | None:
        """The position saved in checkpoint.pt, or None before the first one."""
        path = self.output / checkpoint.FILENAME
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)["position"]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory) -> SimpleNamespace:
    """Interrupt two runs, then resume them: the SIGKILLed one in a fresh process (as after a crash), the
    Ctrl-C'd one in-process, after the uninterrupted reference has trained in-process (one thread, like
    the subprocesses)."""
    root = tmp_path_factory.mktemp("resume")
    captions, images = _write_data(root)

    def argv(name: str, *extra: str) -> list[str]:
        return _train_argv(tiny_model, captions, images, root / name, *extra)

    killed = Run(argv("killed"), root / "killed", "killed", delay=0.5)
    interrupted = Run(argv("interrupted"), root / "interrupted", "interrupted", delay=0.5)
    procs = [killed.proc, interrupted.proc]
    pending = {signal.SIGKILL: (killed, lambda p: p["epoch"] == 1 and p["step"] >= 1),  # mid-epoch 2
               signal.SIGINT: (interrupted, lambda p: p["epoch"] == 0 and p["step"] >= 1)}
    deadline = time.monotonic() + 180
    threads = torch.get_num_threads()
    try:
        while pending and time.monotonic() < deadline:
            for sig, (run, ready) in list(pending.items()):
                assert run.proc.poll() is None, f"{run.output.name} ended before it was interrupted: {run.stderr()}"
                position = run.position()
                if position is not None and ready(position):
                    run.proc.send_signal(sig)
                    del pending[sig]
            time.sleep(0.02)
        assert not pending, f"no checkpoint to interrupt {[run.output.name for run, _ in pending.values()]} at"
        left = {run.output.name: _left_behind(run) for run in (killed, interrupted)}

        killed_resumed = Run(argv("killed", "--resume"), root / "killed", "killed-resume")
        procs.append(killed_resumed.proc)
        torch.set_num_threads(1)
        assert main(argv("reference")) == 0
        interrupted_resumed = main(argv("interrupted", "--resume"))
        killed_resumed.wait()
        yield SimpleNamespace(killed=killed, interrupted=interrupted, left=left, killed_resumed=killed_resumed,
                              interrupted_resumed=interrupted_resumed, reference=root / "reference")
    finally:
        torch.set_num_threads(threads)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _left_behind(run: Run) -> dict:
    """What an interrupted run leaves: its exit status, checkpoint position, adapter, whether it finished."""
    exit_status = run.wait()
    has_adapter = (run.output / "adapter_model.safetensors").exists()
    return {"exit": exit_status, "position": run.position(), "adapter": _adapter(run.output) if has_adapter else None,
            "finished": (run.output / "summary.json").exists()}


def _adapter(output: Path) -> dict[str, torch.Tensor]:
    return load_file(output / "adapter_model.safetensors")


def _assert_same_adapter(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), name


def _records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(runs):
    left, resumed = runs.left["killed"], runs.killed_resumed
    assert left["exit"] == -signal.SIGKILL and not left["finished"]
    position = left["position"]  # a readable checkpoint: written atomically
    assert position["epoch"] == 1 and 0 < position["step"] < STEPS_PER_EPOCH, position

    assert resumed.wait() == 0, resumed.stderr()
    assert f"resuming from epoch 2, step {position['step']}" in resumed.stdout()
    final = _adapter(runs.killed.output)
    _assert_same_adapter(final, _adapter(runs.reference))
    assert any(not torch.equal(final[n], left["adapter"][n]) for n in final)  # epoch 1's adapter was replaced

    # The log continues where the checkpoint was: every step once, and the last epoch's losses (logged
    # after resuming, over a full window) are the reference's.
    log, ref_log = _records(runs.killed.output), _records(runs.reference)
    steps = [(r["kind"], r["step"]) for r in log]
    assert len(steps) == len(set(steps))
    assert steps == [(r["kind"], r["step"]) for r in ref_log]
    last_epoch = [[r["loss"] for r in records if r["epoch"] == EPOCHS] for records in (log, ref_log)]
    assert last_epoch[0] == pytest.approx(last_epoch[1], rel=1e-5)


def test_ctrl_c_checkpoints_exits_130_and_resumes(runs):
    left = runs.left["interrupted"]
    assert left["exit"] == 130 and not left["finished"]
    err = runs.interrupted.stderr()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("turkclip train: ") and "--resume" in lines[0], err
    assert f"checkpoint saved at step {left['position']['global_step']}" in lines[0]
    assert 0 < left["position"]["global_step"] < STEPS_PER_EPOCH * EPOCHS

    assert runs.interrupted_resumed == 0
    _assert_same_adapter(_adapter(runs.interrupted.output), _adapter(runs.reference))


def _resume_reference_with(runs, tiny_model, *changed: str) -> int:
    """Resume the finished reference run with some flags changed; the checkpoint must stay untouched."""
    reference = runs.reference
    config = json.loads((reference / "train_config.json").read_text())
    before = (reference / checkpoint.FILENAME).read_bytes()
    argv = _train_argv(tiny_model, Path(config["captions"]), Path(config["images"]), reference, "--resume")
    status = main([*argv, *changed])
    assert (reference / checkpoint.FILENAME).read_bytes() == before
    return status


def test_resume_with_other_lora_settings_is_one_line_error(runs, tiny_model, capsys):
    assert _resume_reference_with(runs, tiny_model, "--lora-r", "8") == 1
    err = capsys.readouterr().err
    assert err.strip() == f"turkclip train: error: {runs.reference / checkpoint.FILENAME} was written by a run with" \
                          " other LoRA settings; resume with the same flags"


def test_resume_with_other_data_settings_is_refused(runs, tiny_model, capsys):
    """Another --seed or --batch-size would silently continue a different run: refuse it, name the flag."""
    assert _resume_reference_with(runs, tiny_model, "--seed", "4") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed 4 (was 3)" in err[0]


def test_checkpoint_is_replaced_atomically(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpoint.save(tmp_path, model, optimizer, scheduler, {"epoch": 0, "step": 1, "global_step": 1})
    good = (tmp_path / checkpoint.FILENAME).read_bytes()

    def dies_halfway(obj, f):  # the process is killed in the middle of writing the next checkpoint
        Path(f).write_bytes(good[: len(good) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, model, optimizer, scheduler, {"epoch": 0, "step": 2, "global_step": 2})
    assert (tmp_path / checkpoint.FILENAME).read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.SUBFOLDER]  # the training state lives in its own folder
    assert [p.name for p in (tmp_path / checkpoint.SUBFOLDER).iterdir()] == [Path(checkpoint.FILENAME).name]
    assert checkpoint.load(tmp_path, model, optimizer, scheduler)["global_step"] == 1
    monkeypatch.undo()

    (tmp_path / checkpoint.FILENAME).write_bytes(good[: len(good) // 2])  # a torn file from elsewhere
    with pytest.raises(TurkclipError, match="cannot resume from .*checkpoint.pt: it has no turkclip checksum"):
        checkpoint.load(tmp_path, model, optimizer, scheduler)
    torch.save({"weight": torch.zeros(2)}, tmp_path / checkpoint.FILENAME)  # someone else's tensors
    with pytest.raises(TurkclipError, match="no turkclip checksum"):
        checkpoint.load(tmp_path, model, optimizer, scheduler)
    checkpoint._seal(tmp_path / checkpoint.FILENAME)  # sealed, but still not a checkpoint
    with pytest.raises(TurkclipError, match="is not a turkclip checkpoint"):
        checkpoint.load(tmp_path, model, optimizer, scheduler)


class _Touch:
    """Unpickling this creates `marker`: proof that pickled code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_foreign_checkpoint_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    (tmp_path / checkpoint.SUBFOLDER).mkdir()
    torch.save({"position": _Touch(marker)}, tmp_path / checkpoint.FILENAME)
    with pytest.raises(TurkclipError, match="cannot resume from .*checkpoint.pt: it has no turkclip checksum"):
        checkpoint.load(tmp_path, None, None, None)
    checkpoint._seal(tmp_path / checkpoint.FILENAME)  # even with a valid seal the pickle is refused unread
    with pytest.raises(TurkclipError, match="cannot read .*checkpoint.pt"):
        checkpoint.load(tmp_path, None, None, None)
    assert not marker.exists()
    torch.load(tmp_path / checkpoint.FILENAME, weights_only=False)  # the file really was dangerous
    assert marker.exists()


def test_resume_with_other_optimizer_or_lora_settings_is_refused(runs, tiny_model, capsys):
    """LoRA alpha/dropout, warm-up, weight decay and clipping change every later step: refuse, naming each flag."""
    changed = ["--lora-alpha", "8", "--lora-dropout", "0.1", "--warmup-ratio", "0.2", "--weight-decay", "0.01",
               "--clip-grad", "0.5"]
    assert _resume_reference_with(runs, tiny_model, *changed) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    for flag, value, was in [("--lora-alpha", "8", "16"), ("--lora-dropout", "0.1", "0.3"),
                             ("--warmup-ratio", "0.2", "0.05"), ("--weight-decay", "0.01", "0.0"),
                             ("--clip-grad", "0.5", "1.0")]:
        assert f"{flag} {value} (was {was})" in err[0], flag
