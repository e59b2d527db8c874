import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from turkclip.errors import TurkclipError
from turkclip_train.demo.run import run_demo

# Turkish text→image R@1 gain (points) the quick demo must show; chance is 1% (100 test scenes).
# Measured gains over seeds 0, 1, 2 are in the README; this keeps wide slack below them.
MIN_GAIN = 20
MIN_TOWER_GAIN = 15  # the text-tower road's quick recipe (head only): see the README's measured quick numbers


def r1(metrics):
    return metrics["text_to_image"]["R@1"]


def assert_metrics(m):
    assert m["n_images"] > 0 and m["n_texts"] > 0
    for direction in ("text_to_image", "image_to_text"):
        assert 0 <= m[direction]["R@1"] <= m[direction]["R@5"] <= m[direction]["R@10"] <= 100


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    first = run_demo(tmp_path / "one", seed=0, quick=True)

    saved = json.loads((tmp_path / "one" / "demo.json").read_text(encoding="utf-8"))
    assert saved["seconds"] > 0
    for lang in ("turkish", "english"):
        assert_metrics(saved[lang]["before"])
        assert_metrics(saved[lang]["after"])
    assert saved["turkish"]["before"]["n_images"] == saved["english"]["before"]["n_images"] == 100
    # The adapter teaches Turkish, far above chance, and the English it came with survives.
    tr, en = saved["turkish"], saved["english"]
    assert r1(tr["after"]) - r1(tr["before"]) >= MIN_GAIN, tr
    assert r1(en["after"]) >= r1(en["before"]) - 10, en
    for png in ("curves.png", "examples.png"):
        assert (tmp_path / "one" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The adapter folder is a plain PEFT adapter: transformers loads it onto the stage-1 model, and it
    # changes what a Turkish caption means to the text tower.
    from transformers import AutoTokenizer, CLIPModel

    stage1 = Path(saved["stage1"]["folder"])
    model = CLIPModel.from_pretrained(stage1).eval()
    tokens = AutoTokenizer.from_pretrained(stage1)(["gri zemin üzerinde solda iki küçük kırmızı daire"],
                                                   return_tensors="pt")
    with torch.no_grad():
        plain = model.get_text_features(**tokens).pooler_output
        model.load_adapter(str(tmp_path / "one" / "adapter"))
        adapted = model.get_text_features(**tokens).pooler_output
    assert not torch.allclose(plain, adapted, atol=1e-4)

    # The start-here path the demo prints (and the README shows): index its test scenes with the base and the
    # adapter it wrote into --output, then search them in Turkish.
    from turkclip_train.cli import main

    out = tmp_path / "one"
    assert len(list((out / "photos").glob("*.png"))) == 100 and (out / "base" / "config.json").is_file()
    assert main(["index", str(out / "photos"), "--model", str(out / "base"), "--adapter", str(out / "adapter"),
                 "--output", str(out / "index"), "--no-progress"]) == 0
    assert main(["search", str(out / "index"), "iki kırmızı daire", "-k", "3", "--json"]) == 0

    # A second demo (another --output) reuses the cached stage 1 and reproduces the numbers.
    weights = stage1 / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    second = run_demo(tmp_path / "two", seed=0, quick=True)
    assert not first["stage1"]["cached"] and second["stage1"]["cached"]
    assert second["stage1"]["folder"] == str(stage1) and weights.stat().st_mtime_ns == stamp
    for lang in ("turkish", "english"):
        assert r1(second[lang]["after"]) == pytest.approx(r1(first[lang]["after"]))


def test_refuses_an_output_it_did_not_write(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "notes.txt").write_text("mine")
    with pytest.raises(TurkclipError, match="not the output of an earlier demo"):
        run_demo(tmp_path, quick=True)
    assert (tmp_path / "adapter" / "notes.txt").exists()


@pytest.mark.slow
def test_quick_demo_both_roads_side_by_side(tmp_path, e5_folder, monkeypatch):
    """`--route both`: the LoRA road and the e5-small text tower, measured on the same held-out scenes."""
    import turkclip_train.demo.routes as routes

    monkeypatch.setattr(routes, "e5_small", lambda: e5_folder)  # the session's conversion, not another one
    result = run_demo(tmp_path, seed=0, quick=True, route="both")
    saved = json.loads((tmp_path / "demo.json").read_text(encoding="utf-8"))
    assert set(saved["routes"]) == {"lora", "text-tower"} and saved["route"] == "both"
    for road in saved["routes"].values():
        for lang in ("turkish", "english", "heldout_pairs"):
            assert_metrics(road[lang]["before"])
            assert_metrics(road[lang]["after"])
    # The same "before" for both roads (one base, one test set); the tower learnt Turkish far above chance (1%).
    tower, lora = saved["routes"]["text-tower"], saved["routes"]["lora"]
    assert tower["turkish"]["before"] == lora["turkish"]["before"]
    assert r1(tower["turkish"]["after"]) - r1(tower["turkish"]["before"]) >= MIN_TOWER_GAIN, tower["turkish"]
    assert result["turkish"] == lora["turkish"]  # today's top-level keys stay the LoRA road's
    for png in ("routes.png", "curves.png", "examples.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "text-tower" / "modules.json").is_file() and (tmp_path / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_quick_demo_numbers_do_not_depend_on_the_thread_count(tmp_path):
    """The same seed gives the same numbers on 1 and on 2 threads, each run building its own stage 1 (issue 18:
    a fresh clone built another seed-0 base than the README's)."""
    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); from pathlib import Path;"
            " from turkclip_train.demo.run import run_demo; run_demo(Path(sys.argv[2]), seed=0, quick=True)")
    runs = [subprocess.Popen([sys.executable, "-c", code, str(threads), str(tmp_path / f"out{threads}")],
                             env={**os.environ, "TURKCLIP_CACHE": str(tmp_path / f"cache{threads}")},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for threads in (1, 2)]
    for run in runs:  # side by side: each trains on one core
        _, err = run.communicate(timeout=1200)
        assert run.returncode == 0, err[-2000:]
    one, two = (json.loads((tmp_path / f"out{t}" / "demo.json").read_text(encoding="utf-8")) for t in (1, 2))
    assert not one["stage1"]["cached"] and not two["stage1"]["cached"]
    for lang in ("turkish", "english", "heldout_pairs"):
        assert one[lang] == two[lang], lang


def test_demo_writes_outside_the_source_tree_by_default(monkeypatch):
    """Without --output the demo goes to turkclip's cache folder (TURKCLIP_CACHE here), not the working directory."""
    import turkclip_train.demo.run as demo_run
    from turkclip_train.cli import main

    calls = []
    monkeypatch.setattr(demo_run, "run_demo", lambda output, **kw: calls.append(output))
    assert main(["demo", "--quick"]) == 0
    assert calls == [Path(os.environ["TURKCLIP_CACHE"]) / "demo-output"]
