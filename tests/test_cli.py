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
    from turkclip_train.config import TrainConfig
    from turkclip_train.flags import from_args

    args = build_parser().parse_args(["train", "--captions", "c.json", "--images", "i", "--output", "o"])
    cfg = from_args(TrainConfig, args)
    assert cfg == TrainConfig("c.json", "i", "o")  # the flags' defaults are the config's: one definition
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets, cfg.lora.towers) == (
        16, 16, 0.1, ("q_proj", "v_proj"), "both")
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.model) == (1e-4, 64, 5, DEFAULT_MODEL)


def test_every_train_setting_is_a_flag_and_parses_to_the_config():
    import dataclasses

    from turkclip_train.config import TrainConfig
    from turkclip_train.flags import from_args

    args = build_parser().parse_args([
        "train", "--captions", "c.json", "--images", "i", "--output", "o", "--lora-targets", "q_proj, k_proj",
        "--lora-layers", "2", "--lora-towers", "text", "--cache-dir", "none", "--no-progress", "--max-steps", "7",
        "--text-model", "t", "--head-lr", "0.01", "--road", "tower"])
    cfg = from_args(TrainConfig, args)
    assert cfg.lora.targets == ("q_proj", "k_proj") and cfg.lora.layers == 2 and cfg.lora.towers == "text"
    assert cfg.cache_dir is None and cfg.progress is False and cfg.max_steps == 7
    assert (cfg.text_model, cfg.head_lr, cfg.road_name()) == ("t", 0.01, "tower")
    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    settings = {f.name for f in dataclasses.fields(TrainConfig) if f.name != "lora"}
    settings |= {f"lora_{f.name}" for f in dataclasses.fields(TrainConfig().lora) if f.metadata.get("flag", True)}
    assert settings <= flags, settings - flags


def test_help_imports_no_torch():
    run = subprocess.run([sys.executable, "-c", "import sys\nfrom turkclip_train.cli import build_parser\n"
                          "build_parser().format_help()\nprint('torch' in sys.modules)"], capture_output=True, text=True)
    assert run.stdout.strip() == "False", run.stderr


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
