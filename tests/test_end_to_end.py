"""The one real-data integration test: train → evaluate → reload → predict on a slice of TasvirEt, tiny model."""

import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel

from conftest import FLICKR_TOKENS, IMAGES, TASVIRET_PRESENT, TOKENIZER, need_shared
from turkclip.data.captions import read_captions
from turkclip.data.dataset import load_image_text_set
from turkclip.evaluation.evaluate import evaluate
from turkclip.roads import load_clip
from turkclip_train.cli import main as cli

SLICE = {"train": 48, "val": 16, "test": 16}
SHAPE = {"R@1", "R@5", "R@10", "mean_rank", "median_rank"}


def karpathy_slice(folder):
    """The first images of each split of the real file, as a smaller Karpathy JSON."""
    doc = json.loads(TASVIRET_PRESENT.read_text(encoding="utf-8"))
    left, images = dict(SLICE), []
    for image in doc["images"]:
        if left.get(image["split"], 0) > 0:
            left[image["split"]] -= 1
            images.append(image)
    path = folder / "tasviret-slice.json"
    path.write_text(json.dumps({"images": images, "dataset": doc["dataset"]}, ensure_ascii=False), encoding="utf-8")
    return path


def assert_contract(metrics):
    for direction in ("text_to_image", "image_to_text"):
        assert set(metrics[direction]) == SHAPE
        assert all(0 <= metrics[direction][k] <= 100 for k in ("R@1", "R@5", "R@10"))
        assert metrics[direction]["R@1"] <= metrics[direction]["R@5"] <= metrics[direction]["R@10"]
    assert 0 <= metrics["legacy_in_batch_top1"] <= 1
    assert isinstance(metrics["n_images"], int) and isinstance(metrics["n_texts"], int)


@pytest.mark.slow
def test_train_evaluate_reload_predict(tiny_model, tmp_path, capsys):
    need_shared(TASVIRET_PRESENT, IMAGES, FLICKR_TOKENS, TOKENIZER)
    captions = karpathy_slice(tmp_path)
    adapter = tmp_path / "adapter"
    data_flags = ["--model", str(tiny_model), "--captions", str(captions), "--images", str(IMAGES)]

    # train: a subprocess, as a user runs it (Accelerate's process-wide state stays out of this test process)
    run = subprocess.run([sys.executable, "-m", "turkclip_train.cli", "train", *data_flags, "--output", str(adapter),
                          "--epochs", "2", "--batch-size", "16", "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for name in ("adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "curves.png"):
        assert (adapter / name).is_file() and (adapter / name).stat().st_size > 0, name
    trained = load_file(adapter / "adapter_model.safetensors")
    assert any(".lora_B." in k and v.abs().max() > 0 for k, v in trained.items())  # B starts at 0: it learnt
    records = [json.loads(line) for line in (adapter / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"train", "val"}
    assert [r["epoch"] for r in records if r["kind"] == "val"] == [1, 2]
    assert all(r["n_images"] == SLICE["val"] for r in records if r["kind"] == "val")

    # evaluate base and adapter on the test split, Turkish and English side by side
    out = tmp_path / "metrics.json"
    assert cli(["evaluate", *data_flags, "--adapter", str(adapter), "--compare", "--json", str(out),
                "--english-captions", str(FLICKR_TOKENS), "--precision", "fp32"]) == 0
    assert "text→image" in capsys.readouterr().out
    result = json.loads(out.read_text(encoding="utf-8"))
    test_split = read_captions(captions).split("test")
    english = test_split.aligned(read_captions(FLICKR_TOKENS, lang="en"))
    for metrics in (result, result["base"]):
        assert_contract(metrics)
        assert metrics["n_images"] == SLICE["test"] and metrics["n_texts"] == test_split.n_captions
        assert_contract(metrics["english"])
        assert metrics["english"]["n_images"] == SLICE["test"]
        assert metrics["english"]["n_texts"] == english.n_captions
    assert result["split"] == "test"

    # reload the adapter with plain transformers and recompute: the same numbers
    clip = load_clip(str(tiny_model))
    model = CLIPModel.from_pretrained(tiny_model, dtype=torch.float32)
    model.load_adapter(str(adapter))
    data = load_image_text_set(test_split, IMAGES, clip.preprocess)
    again = evaluate(model, clip.text, clip.preprocess, data, torch.device("cpu"), "fp32")
    for key in ("text_to_image", "image_to_text", "legacy_in_batch_top1", "n_images", "n_texts"):
        assert again[key] == pytest.approx(result[key], abs=1e-9), key
    base_again = evaluate(CLIPModel.from_pretrained(tiny_model, dtype=torch.float32), clip.text, clip.preprocess,
                          data, torch.device("cpu"), "fp32")
    for key in ("text_to_image", "image_to_text", "legacy_in_batch_top1"):
        assert base_again[key] == pytest.approx(result["base"][key], abs=1e-9), key

    # predict: one probability per caption, summing to 1
    photo = IMAGES / test_split.records[0].filename
    options = ["bir köpek karda koşuyor", "plajda oynayan çocuklar", "kırmızı elbiseli kız"]
    assert cli(["predict", "--model", str(tiny_model), "--adapter", str(adapter), str(photo), *options]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(options)
    probs = {m["caption"].strip(): float(m["p"]) / 100
             for m in (re.match(r"\s*(?P<p>[\d.]+)%\s+(?P<caption>.+)$", line) for line in lines)}
    assert set(probs) == set(options)
    assert sum(probs.values()) == pytest.approx(1, abs=1e-3)
