"""What a new user tripped on: abbreviated flags, merge over an existing folder, split hints, the table
footer, the curves' labels, subcommand descriptions, a slow noisy failure for an unreachable --model,
and `turkclip init-model`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import TOKENIZER, need_shared
from turkclip.data.captions import read_captions
from turkclip.errors import TurkclipError
from turkclip_train.cli import build_parser, main
from turkclip_train.logs import plot_curves
from turkclip_train.report import format_table


def test_abbreviated_flags_are_refused_everywhere(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:  # --epoch used to be taken silently as --epochs
        parser.parse_args(["train", "--captions", "c", "--images", "i", "--output", "o", "--epoch", "1"])
    assert exit_.value.code == 2 and "unrecognized arguments: --epoch 1" in capsys.readouterr().err
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        assert not sub.allow_abbrev, name
    assert not parser.allow_abbrev


def test_every_subcommand_describes_itself():
    parser = build_parser()
    subparsers = parser._subparsers._group_actions[0]
    for name, sub in subparsers.choices.items():
        assert sub.description and len(sub.description) > 40, name


def test_merge_refuses_a_folder_that_is_not_empty(tiny_model, tmp_path, capsys):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["merge", "--model", str(tiny_model), "--adapter", str(tmp_path / "adapter"), "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and str(out) in err[0]
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"


def test_a_file_without_splits_suggests_split_all(tmp_path):
    path = tmp_path / "caps.csv"
    path.write_text("image,caption\na.jpg,bir köpek\nb.jpg,bir kedi\n", encoding="utf-8")
    with pytest.raises(TurkclipError) as error:
        read_captions(path).split("test")
    assert "--split all" in str(error.value) and "None" not in str(error.value)
    assert len(read_captions(path).split("all").records) == 2


def _metrics(n_texts: int) -> dict:
    one = {"R@1": 1.0, "R@5": 5.0, "R@10": 10.0, "median_rank": 3.0, "mean_rank": 4.0}
    return {"text_to_image": one, "image_to_text": one, "n_images": 10, "n_texts": n_texts, "mean_recall": 5.0}


def test_table_footer_counts_english_captions_too():
    column = {**_metrics(20), "english": _metrics(50)}
    footer = format_table({"base": column, "adapter": column}).splitlines()[-1]
    assert "10 images" in footer and "20 turkish" in footer and "50 english" in footer
    assert "20 turkish captions" in format_table({"base": _metrics(20)}).splitlines()[-1]


def test_curves_label_validation_and_use_whole_epochs(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    seen = {}

    def keep(fig, *args, **kwargs):
        _, ax_val = fig.axes
        fig.canvas.draw()
        seen["labels"] = [t.get_text() for t in ax_val.get_legend().get_texts()]
        seen["ticks"] = [t for t in ax_val.get_xticks() if ax_val.get_xlim()[0] <= t <= ax_val.get_xlim()[1]]

    monkeypatch.setattr(Figure, "savefig", keep)
    records = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in (1, 2, 3)]
    records += [{"kind": "val", "epoch": e, "step": 3 * e, **_metrics(20)} for e in (1, 2)]
    plot_curves({"train": records}, tmp_path / "curves.png")
    assert seen["labels"] and not any(label.startswith("train") for label in seen["labels"])
    assert seen["ticks"] and all(float(t).is_integer() for t in seen["ticks"])


def test_unreachable_model_fails_fast_in_one_line(tmp_path):
    """No network here (the realistic offline case): one line, no minute of hub retries."""
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    script = ("import sys, time; import turkclip_train.commands; from turkclip_train.cli import main;"
              " t = time.perf_counter(); rc = main(sys.argv[1:]); print(rc, time.perf_counter() - t)")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # as a user runs it
    run = subprocess.run([sys.executable, "-c", script, "predict", "--model", "openai/clip-vit-base-patch-typo",
                          str(image), "bir köpek"], capture_output=True, text=True, timeout=300,
                         env=dict(env, OMP_NUM_THREADS="1"))
    rc, seconds = run.stdout.split()
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert rc == "1" and len(lines) == 1, run.stderr
    assert "openai/clip-vit-base-patch-typo" in lines[0] and "hf download" in lines[0]
    assert float(seconds) < 10  # it took 51 s of retries before


def test_init_model_writes_a_loadable_random_model(tmp_path, capsys):
    need_shared(TOKENIZER)
    from turkclip.models.architectures import ARCHITECTURES
    from turkclip.roads import load_clip

    for seed in (1, 2):
        assert main(["init-model", "tiny", str(tmp_path / f"m{seed}"), "--tokenizer", str(TOKENIZER),
                     "--seed", str(seed)]) == 0
    assert "--model" in capsys.readouterr().out
    one, two = load_clip(str(tmp_path / "m1")), load_clip(str(tmp_path / "m2"))
    config = one.model.config
    assert config.vision_config.hidden_size == ARCHITECTURES["tiny"]["vision_config"]["hidden_size"]
    assert config.text_config.vocab_size == len(one.text.tokenizer)
    w1, w2 = (c.model.text_projection.weight for c in (one, two))
    assert not torch.equal(w1, w2)
    again = tmp_path / "m1"
    before = json.loads((again / "config.json").read_text())
    assert main(["init-model", "tiny", str(again), "--tokenizer", str(TOKENIZER)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert json.loads((again / "config.json").read_text()) == before
    assert main(["init-model", "ViT-B/99", str(tmp_path / "x"), "--tokenizer", str(TOKENIZER)]) == 1
    assert "ViT-B/32" in capsys.readouterr().err


def test_a_run_from_before_the_checkpoint_folder_is_still_a_run(tmp_path):
    from turkclip_train import checkpoint
    from turkclip_train.train import _check_output

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpoint.save(tmp_path, model, optimizer, scheduler, {"epoch": 1, "step": 0, "global_step": 4})
    (tmp_path / checkpoint.FILENAME).rename(tmp_path / "checkpoint.pt")  # the old layout
    (tmp_path / checkpoint.SUBFOLDER).rmdir()
    with pytest.raises(TurkclipError, match="already holds a training run"):
        _check_output(tmp_path, resume=False)
    assert not (tmp_path / "checkpoint.pt").exists()
    assert checkpoint.load(tmp_path, model, optimizer, scheduler)["global_step"] == 4  # --resume finds it


def test_processor_never_overwrites_a_sentence_transformers_folder(tiny_model, tmp_path):
    from turkclip.models.processor import save_processor
    from turkclip.roads import load_clip

    (tmp_path / "modules.json").write_text("[]")
    (tmp_path / "tokenizer.json").write_text("the text tower's own")
    save_processor(load_clip(str(tiny_model)), tmp_path, "tr")
    assert (tmp_path / "tokenizer.json").read_text() == "the text tower's own"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["modules.json", "tokenizer.json"]
