"""A damaged checkpoint is refused in one line before anything is loaded; a resume must be the same run.

Bit flips across the whole file (tensor data, pickle, zip directory, the seal), truncations, a 0-byte file; and
resumes that change what the run learns while every tensor keeps its shape: another model of the same
architecture, edited captions, other rehearsal captions, another precision or caption language.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import write_captioned_images
from turkclip.errors import TurkclipError
from turkclip_train import checkpoint
from turkclip_train.cli import main
from turkclip_train.train import TrainConfig


def _tiny_state(tmp_path: Path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    checkpoint.save(tmp_path, model, optimizer, scheduler, {"epoch": 0, "step": 1, "global_step": 1})
    return model, optimizer, scheduler


def test_every_flipped_byte_and_every_truncation_is_refused_before_loading(tmp_path):
    model, optimizer, scheduler = _tiny_state(tmp_path)
    path = tmp_path / checkpoint.FILENAME
    good = path.read_bytes()
    weights = model.weight.detach().clone()
    for offset in range(0, len(good), 7):  # every 7th byte: tensor data, the pickle, zip headers, the seal
        damaged = bytearray(good)
        damaged[offset] ^= 0x04
        path.write_bytes(bytes(damaged))
        with pytest.raises(TurkclipError, match=r"cannot resume from .*checkpoint\.pt: .*; start over .* or restore"):
            checkpoint.load(tmp_path, model, optimizer, scheduler)
    for length in (0, 1, 21, 100, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:length])
        with pytest.raises(TurkclipError, match="empty" if length == 0 else "no turkclip checksum"):
            checkpoint.load(tmp_path, model, optimizer, scheduler)
    assert torch.equal(model.weight, weights)  # nothing was loaded from any of them
    path.write_bytes(good)
    assert checkpoint.load(tmp_path, model, optimizer, scheduler)["global_step"] == 1


def test_full_disk_keeps_the_last_checkpoint_in_one_line(tmp_path, monkeypatch):
    model, optimizer, scheduler = _tiny_state(tmp_path)
    good = (tmp_path / checkpoint.FILENAME).read_bytes()

    def full(obj, f):  # what torch.save raises when the disk fills up under it
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(TurkclipError, match="last checkpoint is untouched") as e:
        checkpoint.save(tmp_path, model, optimizer, scheduler, {"epoch": 0, "step": 2, "global_step": 2})
    assert "\n" not in str(e.value)
    assert (tmp_path / checkpoint.FILENAME).read_bytes() == good
    assert [p.name for p in (tmp_path / checkpoint.SUBFOLDER).iterdir()] == ["checkpoint.pt"]  # no temp file left


# --- resuming the same run -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    """One finished 1-epoch run (a checkpoint to resume) and its flags."""
    root = tmp_path_factory.mktemp("same-run")
    captions, images = write_captioned_images(root, 5, lambda i: [f"kırmızı bir şey {i}"])
    english = root / "english.csv"
    english.write_text("image,caption\n" + "".join(f"{i:02d}.jpg,a red thing {i}\n" for i in range(5)),
                       encoding="utf-8")
    model = root / "model"
    shutil.copytree(tiny_model, model)
    argv = ["train", "--model", str(model), "--captions", str(captions), "--images", str(images),
            "--output", str(root / "out"), "--epochs", "1", "--batch-size", "2", "--lora-r", "2", "--precision",
            "fp32", "--cache-dir", "none", "--rehearsal-captions", str(english), "--no-progress"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "argv": argv, "model": model, "captions": captions, "english": english}


def _resume(run, capsys, *changed: str) -> str:
    """The stderr of resuming the finished run with `changed` flags (it must refuse and keep the checkpoint)."""
    before = (run["root"] / "out" / checkpoint.FILENAME).read_bytes()
    status = main([*run["argv"], "--resume", *changed])
    err = capsys.readouterr().err
    assert (run["root"] / "out" / checkpoint.FILENAME).read_bytes() == before
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_resume_refuses_a_damaged_checkpoint_in_one_line(run, capsys):
    path = run["root"] / "out" / checkpoint.FILENAME
    good = path.read_bytes()
    try:
        for damaged in (b"", good[:-40], good[:100] + bytes([good[100] ^ 1]) + good[101:]):
            path.write_bytes(damaged)
            assert "start over" in _resume(run, capsys)
    finally:
        path.write_bytes(good)


def test_resume_refuses_what_changes_the_run_with_the_same_shapes(run, capsys, tmp_path):
    other_model = shutil.copytree(run["model"], tmp_path / "model")  # same architecture, one weight changed
    weights = load_file(other_model / "model.safetensors")
    name = next(n for n in weights if n.endswith("visual_projection.weight"))
    weights[name] = weights[name] + 1
    save_file(weights, other_model / "model.safetensors", metadata={"format": "pt"})
    other_english = tmp_path / "english.csv"
    other_english.write_text(run["english"].read_text(encoding="utf-8").replace("red", "blue"), encoding="utf-8")
    err = _resume(run, capsys, "--model", str(other_model), "--rehearsal-captions", str(other_english),
                  "--precision", "bf16", "--lang", "en")
    for phrase in ("--model (its files are not those the run started with)", "--rehearsal-captions (its files are not",
                   "--precision bf16 (was fp32)", "--lang en (was tr)"):
        assert phrase in err, phrase

    edited = run["captions"].read_text(encoding="utf-8")
    run["captions"].write_text(edited.replace("kırmızı", "mavi"), encoding="utf-8")
    try:
        assert "--captions (its files are not those" in _resume(run, capsys)
    finally:
        run["captions"].write_text(edited, encoding="utf-8")


def test_run_settings_follow_contents_not_names(run, tmp_path):
    def settings(**changed):
        base = dict(captions=str(run["captions"]), images=str(run["captions"].parent / "images"),
                    output=str(tmp_path / "out"), model=str(run["model"]), precision="fp32")
        return checkpoint.run_settings(TrainConfig(**{**base, **changed}), 1)

    saved = json.loads(json.dumps(settings()))  # as a checkpoint stores it
    moved = shutil.copytree(run["model"], tmp_path / "moved")
    checkpoint.check_same_run(tmp_path, saved, settings(model=str(moved)))  # the same files elsewhere: same run
    checkpoint.check_same_run(tmp_path, saved, settings(checkpoint_every=7, log_every=3, resume=True))
    with pytest.raises(TurkclipError, match=r"--train-split train,extra \(was train\)"):
        checkpoint.check_same_run(tmp_path, saved, settings(train_split="train,extra"))
    (moved / "config.json").write_text((moved / "config.json").read_text() + " ")
    with pytest.raises(TurkclipError, match="--model"):
        checkpoint.check_same_run(tmp_path, saved, settings(model=str(moved)))
