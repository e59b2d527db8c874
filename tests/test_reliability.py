"""Bad input never crashes: each problem is one clear line, and the CLI exits 1 without a traceback.

Every fixture is generated here: corrupt, truncated and zero-byte JPEGs, text files named .jpg,
cp1254 and UTF-16 captions files, file names that escape the images root, pickles that would
run code if anything ever unpickled them.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from turkclip.data.captions import read_captions
from turkclip.data.dataset import load_image_text_set
from turkclip.data.images import Preprocess
from turkclip.errors import TurkclipError
from turkclip.roads import load_clip
from turkclip.roads.adapters import attach_lora, load_adapter
from turkclip.roads.settings import LoraSettings
from turkclip_train import checkpoint
from turkclip_train import train as train_module
from turkclip_train.cli import main

ROOT = Path(__file__).resolve().parents[1]
TURKISH = "Kırmızı şapkalı İnsan ığdır'da çiçek görüyor"  # ı ş İ ğ: not in latin-1


def _jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _bad_images(folder: Path) -> dict[str, str]:
    """8 good JPEGs plus every kind of bad file; returns {bad name: what is wrong with it}."""
    folder.mkdir(parents=True)
    for i in range(8):
        (folder / f"{i:02d}.jpg").write_bytes(_jpeg_bytes(i))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(_jpeg_bytes(99)[:-300])
    (folder / "text.jpg").write_text("this is not a picture")
    return {"empty.jpg": "empty file", "truncated.jpg": "truncated", "text.jpg": "not a jpeg, png, webp, bmp or gif image",
            "missing.jpg": "missing"}


def _csv(path: Path, names: list[str], split: str = "train") -> Path:
    path.write_text("image,caption,split\n" + "".join(f"{n},bir resim {i},{split}\n" for i, n in enumerate(names)),
                    encoding="utf-8")
    return path


class _Evil:
    """Unpickling this creates `marker`: proof that something ran pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _one_error_line(err: str, command: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"turkclip {command}: error: ")
    return lines[0]


# --- captions files ----------------------------------------------------------------------------


@pytest.mark.parametrize("doc, message", [
    ({"annotations": []}, 'missing top-level "images" list'),
    ({"images": [{"filename": "a.jpg", "sentences": [{"raw": "x"}]}, {"filename": "b.jpg"}]},
     'images[1] has no "sentences" key'),
    ({"images": [{"split": "train", "sentences": []}]}, 'images[0] has no "filename" key'),
    ({"images": [{"filename": "a.jpg", "sentences": [{"raw": "x"}, {"tokens": ["x"]}]}]},
     'images[0].sentences[1] has no "raw" caption'),
])
def test_non_karpathy_json_names_the_missing_key_and_where(tmp_path, doc, message):
    path = tmp_path / "caps.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TurkclipError, match=re.escape(message)):
        read_captions(path)


def test_csv_with_missing_columns_lists_the_columns_it_has(tmp_path):
    path = tmp_path / "caps.csv"
    path.write_text("file,text\na.jpg,bir resim\n")
    with pytest.raises(TurkclipError, match=r"missing column\(s\) image, caption; it has file, text"):
        read_captions(path)
    assert read_captions(path, image_column="file", caption_column="text").records[0].captions == ["bir resim"]


@pytest.mark.parametrize("name, content, where", [
    ("caps.csv", "image,caption\na.jpg,bir resim\nb.jpg,   \n", "caps.csv:3: empty caption"),
    ("caps.json", json.dumps({"images": [{"filename": "a.jpg", "sentences": [{"raw": ""}]}]}),
     "images[0].sentences[0]: empty caption"),
    ("caps.jsonl", '{"image": "a.jpg", "caption": " "}\n', "caps.jsonl:1: empty caption"),
])
def test_empty_caption_is_refused_with_its_place(tmp_path, name, content, where):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TurkclipError, match=re.escape(where)):
        read_captions(path)


@pytest.mark.parametrize("encoding, detected", [
    ("cp1254", "It looks like Turkish Windows-1254 (latin-5); pass --encoding cp1254"),
    ("utf-16-le", "looks like UTF-16 without a byte-order mark: pass --encoding utf-16-le"),
    ("utf-16-be", "looks like UTF-16 without a byte-order mark: pass --encoding utf-16-be"),
])
def test_non_utf8_captions_are_detected_and_read_with_encoding(tmp_path, encoding, detected):
    path = tmp_path / "caps.csv"
    path.write_bytes(f"image,caption\na.jpg,{TURKISH}\n".encode(encoding))
    with pytest.raises(TurkclipError, match=re.escape(detected)):
        read_captions(path)
    assert read_captions(path, encoding=encoding).records[0].captions == [TURKISH]


@pytest.mark.parametrize("written, flag", [("utf-16", None), ("utf-8-sig", None), ("utf-8-sig", "utf-8")])
def test_files_with_a_byte_order_mark_are_read(tmp_path, written, flag):
    path = tmp_path / "caps.csv"
    path.write_bytes(f"image,caption\na.jpg,{TURKISH}\n".encode(written))
    assert read_captions(path, encoding=flag).records[0].captions == [TURKISH]


def test_malformed_rows_are_one_line_errors(tmp_path):
    huge = tmp_path / "huge.csv"
    huge.write_text("image,caption\na.jpg," + "x" * 200_000 + "\n")
    with pytest.raises(TurkclipError, match="huge.csv:.*not valid CSV: field larger than field limit"):
        read_captions(huge)
    numeric = tmp_path / "caps.jsonl"
    numeric.write_text('{"image": 3, "caption": "bir resim"}\n')
    with pytest.raises(TurkclipError, match="caps.jsonl:1: 'image' must be a non-empty file name, not 3"):
        read_captions(numeric)


@pytest.mark.parametrize("name, content", [
    ("caps.json", '{"images": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("caps.jsonl", '{"image": "a.jpg", "caption": "bir resim"}\n' + "[" * 100_000 + "]" * 100_000 + "\n"),
])
def test_deeply_nested_json_is_one_line(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TurkclipError, match=re.escape(name) + r"(:2)?: JSON nested too deeply to read") as e:
        read_captions(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name, content, where", [
    ("caps.json", '{"images": [{"filename": "a.jpg", "sentences": [{"raw": "bir \\ud800 kedi"}]}]}',
     "caps.json: images[0].sentences[0]: holds '\\ud800'"),
    ("caps.json", '{"images": [{"filename": "\\udfff.jpg", "sentences": [{"raw": "bir kedi"}]}]}',
     "caps.json: images[0].filename: holds '\\udfff'"),
    ("caps.jsonl", '{"image": "a.jpg", "caption": "iyi"}\n{"image": "b.jpg", "caption": "k\\udc80di"}\n',
     "caps.jsonl:2: holds '\\udc80'"),
])
def test_lone_surrogate_is_refused_with_its_place(tmp_path, name, content, where):
    """A lone surrogate is not a character (the tokenizer would raise TypeError): refused, not replaced."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TurkclipError, match=re.escape(where)):
        read_captions(path)
    paired = tmp_path / "paired.jsonl"  # a surrogate pair is one character (an emoji): fine
    paired.write_text('{"image": "a.jpg", "caption": "kedi \\ud83d\\ude00"}\n', encoding="utf-8")
    assert read_captions(paired).records[0].captions == ["kedi \U0001f600"]


def test_oversized_captions_file_is_refused_unread(tmp_path, monkeypatch):
    from turkclip.data import captions

    path = _csv(tmp_path / "caps.csv", ["00.jpg"])
    monkeypatch.setattr(captions, "MAX_BYTES", 10)
    with pytest.raises(TurkclipError, match="larger than 0 GB.*--shards"):
        read_captions(path)


def test_training_says_which_images_no_split_takes(tmp_path, tiny_images, capsys):
    """Images in a split training does not use (restval, a typo, none) are named and counted, never silently dropped."""
    from turkclip_train.inputs import training_sets
    from turkclip_train.train import TrainConfig

    path = tmp_path / "caps.csv"
    splits = ["train"] * 4 + ["val", "test", "restval", "restval", "Train", ""]
    path.write_text("image,caption,split\n" + "".join(f"{i:02d}.jpg,bir resim {i},{s}\n" for i, s in enumerate(splits)),
                    encoding="utf-8")
    cfg = TrainConfig(captions=str(path), images=str(tiny_images), output=str(tmp_path / "out"), cache_dir=None)
    train, val = training_sets(cfg, Preprocess(size=32), None)
    assert (len(train), len(val)) == (4, 1)
    err = capsys.readouterr().err.strip()
    assert err == (f"note: {path}: 4 images are in splits this run leaves out: restval (2 images), Train (1 images),"
                   " (no split) (1 images) (it trains on 'train', validates on 'val'); to train on them too:"
                   " --train-split train,restval,Train; images without a split are taken only by --train-split all")
    cfg.train_split = "train,restval,Train"
    train, _ = training_sets(cfg, Preprocess(size=32), None)
    assert len(train) == 7 and "(no split) (1 images)" in capsys.readouterr().err


def test_duplicate_image_entries_are_refused(tmp_path, tiny_images):
    doc = {"images": [{"filename": "00.jpg", "sentences": [{"raw": "a"}]}, {"filename": "01.jpg", "sentences": []},
                      {"filename": "00.jpg", "sentences": [{"raw": "b"}]}]}
    path = tmp_path / "caps.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TurkclipError, match=re.escape("images[2]: duplicate entry for image '00.jpg' (first at images[0])")):
        read_captions(path)
    conflicting = tmp_path / "split.csv"
    conflicting.write_text("image,caption,split\n00.jpg,a,train\n00.jpg,b,test\n")
    with pytest.raises(TurkclipError, match="split.csv:3: image '00.jpg' is in split 'test' here but 'train' earlier"):
        read_captions(conflicting)
    # Two spellings of one file would put the image in the gallery twice.
    aliases = read_captions(_csv(tmp_path / "alias.csv", ["00.jpg", "01.jpg", "./00.jpg"]))
    with pytest.raises(TurkclipError, match="'00.jpg' and './00.jpg' are the same image file"):
        load_image_text_set(aliases, tiny_images, Preprocess(size=32))


# --- images ------------------------------------------------------------------------------------


def test_bad_images_are_counted_and_skipped_only_when_asked(tmp_path):
    root = tmp_path / "images"
    bad = _bad_images(root)
    names = [f"{i:02d}.jpg" for i in range(8)] + [n for n in bad if n != "missing.jpg"]
    captions = read_captions(_csv(tmp_path / "caps.csv", names))
    with pytest.raises(TurkclipError, match="3 of 11 images under .* are missing or unreadable .*--skip-bad-images"):
        load_image_text_set(captions, root, Preprocess(size=32))

    captions = read_captions(_csv(tmp_path / "all.csv", names + ["missing.jpg"]))
    with pytest.raises(TurkclipError, match="1 of 12 images .* missing .*first: missing.jpg: missing"):
        load_image_text_set(captions, root, Preprocess(size=32))  # missing files fail fast, before decoding
    data = load_image_text_set(captions, root, Preprocess(size=32), skip_bad=True)
    assert data.filenames == [f"{i:02d}.jpg" for i in range(8)] and data.pixels.shape == (8, 3, 32, 32)
    problems = dict(data.skipped)
    assert problems.keys() == bad.keys()
    for name, problem in bad.items():
        assert problem in problems[name].lower()


@pytest.mark.parametrize("name", ["../outside.jpg", "sub/../../outside.jpg", "ABSOLUTE", "a\x00.jpg"])
def test_file_names_that_escape_the_images_root_are_refused(tmp_path, tiny_images, name):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(_jpeg_bytes(0))  # it exists: refused because of where it is, not because it is missing
    name = str(outside) if name == "ABSOLUTE" else name
    captions = read_captions(_csv(tmp_path / "caps.csv", ["00.jpg", name]))
    with pytest.raises(TurkclipError, match="refusing .*image path"):
        load_image_text_set(captions, tiny_images, Preprocess(size=32), skip_bad=True)


# --- models and adapters: safetensors only, never unpickle ---------------------------------------


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("adapter") / "lora"
    attach_lora(load_clip(str(tiny_model)).model, LoraSettings(r=2)).save_pretrained(folder)
    return folder


def test_model_folder_with_only_a_pickle_is_refused_unread(tmp_path, tiny_model):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(TurkclipError, match="no file named model.safetensors"):
        load_clip(str(folder))
    assert not marker.exists()


def test_not_an_adapter_folders_are_refused(tmp_path, tiny_model, adapter):
    model = load_clip(str(tiny_model)).model
    with pytest.raises(TurkclipError, match="is not an adapter folder: it has no adapter_config.json"):
        load_adapter(model, tiny_model)

    pickled = tmp_path / "pickled"  # what older PEFT wrote: refused without being opened
    pickled.mkdir()
    shutil.copy(adapter / "adapter_config.json", pickled)
    marker = tmp_path / "unpickled"
    (pickled / "adapter_model.bin").write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(TurkclipError, match="has no adapter_model.safetensors; turkclip loads weights only from safetensors"):
        load_adapter(model, pickled)
    assert not marker.exists()

    foreign = tmp_path / "foreign"
    shutil.copytree(adapter, foreign)
    (foreign / "adapter_config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(TurkclipError, match='is not a PEFT adapter config: it has no "peft_type"'):
        load_adapter(model, foreign)

    torn = tmp_path / "torn"
    shutil.copytree(adapter, torn)
    data = (torn / "adapter_model.safetensors").read_bytes()
    (torn / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(TurkclipError, match="is not a usable adapter"):
        load_adapter(model, torn)


@pytest.mark.parametrize("change, message", [
    ({"hidden_size": 48}, "tensor shapes differ"),
    ({"num_hidden_layers": 3}, "its layers differ"),
    ({"num_hidden_layers": 1}, "its layers differ"),
])
def test_adapter_for_a_different_base_is_refused(tiny_model, adapter, change, message):
    from transformers import CLIPConfig, CLIPModel

    config = load_clip(str(tiny_model)).model.config
    other = CLIPModel(CLIPConfig(text_config={**config.text_config.to_dict(), **change},
                                 vision_config={**config.vision_config.to_dict(), **change},
                                 projection_dim=config.projection_dim))
    with pytest.raises(TurkclipError, match=f"trained for a different base model \\({message}\\)"):
        load_adapter(other, adapter)


def test_source_loads_tensors_only_through_safetensors_or_weights_only():
    for path in (ROOT / "src").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from) (pickle|dill|joblib)\b", source, re.M), path
        for call in re.findall(r"torch\.load\([^)]*\)", source):
            assert "weights_only=True" in call, f"{path}: {call}"


def test_every_from_pretrained_refuses_remote_code():
    """transformers never runs (or asks on the terminal whether to run) code that comes with a model."""
    import ast

    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "from_pretrained"):
                continue
            if ast.unparse(node.func.value) == "PeftModel":
                continue  # an adapter is a config and weights: PEFT runs no code from it
            passed = [ast.unparse(k) for k in node.keywords]
            assert "trust_remote_code=False" in passed or "**NO_REMOTE_CODE" in passed, f"{path}:{node.lineno}"


@pytest.mark.parametrize("config_file", ["config.json", "tokenizer_config.json"])
def test_model_folder_asking_to_run_its_own_code_is_refused(tmp_path, tiny_model, tiny_images, config_file, capsys):
    folder = shutil.copytree(tiny_model, tmp_path / "model")
    config = json.loads((folder / config_file).read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModel": "evil.EvilModel", "AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / config_file).write_text(json.dumps(config), encoding="utf-8")
    (folder / "evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    assert main(["predict", "--model", str(folder), str(tiny_images / "00.jpg"), "bir kedi"]) == 1
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert f"({config_file} has an auto_map): turkclip never runs code that comes with a model" in line
    assert not (tmp_path / "ran").exists()


# --- the CLI: one line, exit 1, --debug for the traceback ----------------------------------------


def test_cli_errors_are_one_line_and_debug_adds_the_traceback(tmp_path, tiny_model, tiny_images, one_thread, capsys):
    cp1254 = tmp_path / "tr.csv"
    cp1254.write_bytes(f"image,caption\n00.jpg,{TURKISH}\n".encode("cp1254"))
    traversal = _csv(tmp_path / "up.csv", ["00.jpg", "../../etc/passwd"], split="test")
    fine = _csv(tmp_path / "fine.csv", ["00.jpg", "01.jpg"], split="test")
    bad = _bad_images(tmp_path / "bad")
    unreadable = _csv(tmp_path / "bad.csv", [f"{i:02d}.jpg" for i in range(8)] + [n for n in bad if n != "missing.jpg"])
    model = ["--model", str(tiny_model), "--cache-dir", "none"]
    cases = [
        (["evaluate", *model, "--captions", str(cp1254), "--images", str(tiny_images)], "--encoding cp1254"),
        (["evaluate", *model, "--captions", str(traversal), "--images", str(tiny_images)],
         "refusing image path '../../etc/passwd'"),
        (["evaluate", *model, "--captions", str(fine), "--images", str(tmp_path / "nowhere")], "images folder not found"),
        (["evaluate", *model, "--captions", str(fine), "--images", str(tiny_images), "--adapter", str(tiny_model)],
         "not an adapter folder"),
        (["train", *model, "--captions", str(unreadable), "--images", str(tmp_path / "bad"), "--output", str(tmp_path / "o"),
          "--no-progress"], "3 of 11 images under"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        assert message in _one_error_line(capsys.readouterr().err, argv[0])

    assert main([*cases[0][0], "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("turkclip evaluate: error: ")


def test_cli_offline_hub_id_says_to_pass_a_local_folder(tmp_path, tiny_images):
    captions = _csv(tmp_path / "caps.csv", ["00.jpg", "01.jpg"], split="test")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "turkclip_train.cli", "evaluate", "--model", "some-org/some-model",
                          "--captions", str(captions), "--images", str(tiny_images)],
                         env=env, text=True, capture_output=True, timeout=180)
    assert run.returncode == 1
    line = _one_error_line(run.stderr, "evaluate")
    assert "'some-org/some-model'" in line and "hub is unreachable" in line and "pass --model DIR" in line


def test_cli_skip_bad_images_reports_the_count_at_the_end(tmp_path, tiny_model, one_thread, capsys):
    bad = _bad_images(tmp_path / "images")
    captions = _csv(tmp_path / "all.csv", [f"{i:02d}.jpg" for i in range(8)] + list(bad))
    assert main(["evaluate", "--model", str(tiny_model), "--captions", str(captions), "--images", str(tmp_path / "images"),
                 "--split", "all", "--skip-bad-images", "--cache-dir", "none"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "skipped 4 missing or unreadable images (--skip-bad-images)"


# --- non-finite loss -----------------------------------------------------------------------------


def test_nonfinite_loss_names_the_step_and_keeps_the_best_adapter(tmp_path, tiny_model, tiny_images, one_thread,
                                                                   monkeypatch, capsys):
    captions = _csv(tmp_path / "caps.csv", [f"{i:02d}.jpg" for i in range(9)])  # 4 steps per epoch at batch 2
    out = tmp_path / "run"
    real_loss, calls, before = train_module.clip_loss, [], {}

    def loss_that_explodes_at_step_6(*args):
        calls.append(1)
        if len(calls) == 6:  # epoch 2: epoch 1's adapter and step 5's checkpoint are on disk
            before.update({f: (out / f).read_bytes() for f in ("adapter_model.safetensors", checkpoint.FILENAME)})
            return real_loss(*args) * float("nan")
        return real_loss(*args)

    monkeypatch.setattr(train_module, "clip_loss", loss_that_explodes_at_step_6)
    code = main(["train", "--model", str(tiny_model), "--captions", str(captions), "--images", str(tiny_images),
                 "--output", str(out), "--epochs", "3", "--batch-size", "2", "--lora-r", "2", "--checkpoint-every", "1",
                 "--precision", "fp32", "--cache-dir", "none", "--no-progress"])
    assert code == 1
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "loss became nan at step 6 (epoch 2)" in line
    assert len(calls) == 6
    assert {f: (out / f).read_bytes() for f in before} == before  # byte-identical: nothing overwritten
