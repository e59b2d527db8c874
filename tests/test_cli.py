"""The `turkclip` command line: help for every subcommand, seed-recipe defaults, one-line user errors."""

import json
import subprocess
import sys

import pytest

from turkclip_train.cli import DEFAULT_MODEL, build_parser, main

SUBCOMMANDS = ["train", "evaluate", "predict", "merge", "demo", "init-model"]


def turkclip(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "turkclip_train.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args", [["--help"]] + [[cmd, "--help"] for cmd in SUBCOMMANDS])
def test_help(args):
    run = turkclip(*args)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: turkclip") and not run.stderr


def test_help_needs_no_torch():
    code = "import sys; from turkclip_train.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "False", run.stderr


def test_default_model_matches_library():
    from turkclip.models.clip import DEFAULT_MODEL as library_default

    assert DEFAULT_MODEL == library_default


def test_train_help_states_seed_recipe():
    text = " ".join(turkclip("train", "--help").stdout.split())  # argparse wraps lines
    for fact in ("r=16", "alpha=16", "q_proj+v_proj in both towers", "dropout 0.1", "lr 1e-4", "batch 64", "5 epochs"):
        assert fact in text, fact


def test_train_flag_defaults_are_the_seed_recipe():
    from turkclip.roads.adapters import LoraSettings
    from turkclip_train.train import TrainConfig

    args = build_parser().parse_args(["train", "--captions", "c.json", "--images", "i", "--output", "o"])
    lora, cfg = LoraSettings(), TrainConfig("c.json", "i", "o")
    assert (args.lora_r, args.lora_alpha, args.lora_dropout) == (lora.r, lora.alpha, lora.dropout) == (16, 16, 0.1)
    assert tuple(args.lora_targets.split(",")) == lora.targets == ("q_proj", "v_proj")
    assert args.lora_towers == lora.towers == "both"
    assert (args.lr, args.batch_size, args.epochs) == (cfg.lr, cfg.batch_size, cfg.epochs) == (1e-4, 64, 5)
    assert args.model == cfg.model == DEFAULT_MODEL


def assert_one_line_error(run, command, *phrases):
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"turkclip {command}: error: ")
    for phrase in phrases:
        assert phrase in lines[0]


def test_unknown_split_is_a_one_line_error(tiny_model, tmp_path):
    captions = tmp_path / "caps.json"
    captions.write_text(json.dumps({"images": [
        {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "bir köpek"}]},
        {"filename": "b.jpg", "split": "test", "sentences": [{"raw": "bir kedi"}]},
    ]}), encoding="utf-8")
    run = turkclip("evaluate", "--model", str(tiny_model), "--captions", str(captions), "--images", str(tmp_path),
                   "--split", "validation")
    assert_one_line_error(run, "evaluate", "'validation'", "train (1 images)", "test (1 images)")


def test_missing_captions_file_is_a_one_line_error(tiny_model, tmp_path):
    missing = tmp_path / "nowhere" / "captions.json"
    run = turkclip("train", "--model", str(tiny_model), "--captions", str(missing), "--images", str(tmp_path),
                   "--output", str(tmp_path / "out"))
    assert_one_line_error(run, "train", "captions file not found", str(missing))
    assert not (tmp_path / "out").exists()


def test_evaluate_is_fp32_unless_asked_and_says_so(tiny_model, tiny_images, tmp_path):
    """bf16 embeddings move near-tied ranks: `turkclip evaluate` measures in fp32 by default and the JSON records it."""
    captions = tmp_path / "c.csv"
    captions.write_text("image,caption\n" + "".join(f"{i:02d}.jpg,bir şey {i}\n" for i in range(4)), encoding="utf-8")
    for extra, expected in [([], "fp32"), (["--precision", "bf16"], "bf16")]:
        out = tmp_path / f"m-{expected}.json"
        assert main(["evaluate", "--model", str(tiny_model), "--captions", str(captions), "--images", str(tiny_images),
                     "--split", "all", "--cache-dir", "none", "--json", str(out), *extra]) == 0
        assert json.loads(out.read_text())["precision"] == expected
