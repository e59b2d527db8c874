"""`--lora-layers N` and the remembered lower-layer states (turkclip/roads/text_prefix.py): exact against the full
text tower, LoRA only where asked, adapters that reload as before, and the refusals."""

import os
import re
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from transformers import CLIPModel

from conftest import ROOT, write_captioned_images
from turkclip.data.sampling import Item
from turkclip.embedding.embed import autocast, text_features
from turkclip.errors import TurkclipError
from turkclip.roads import load_clip
from turkclip.roads.adapters import attach_lora, load_adapter
from turkclip.roads.loss import clip_loss
from turkclip.roads.settings import LoraSettings
from turkclip.roads.text_prefix import FullText, PrefixText, pool_positions
from turkclip_train.cli import main as cli
from turkclip_train.config import TrainConfig
from turkclip_train.train import train

CAPTIONS = ["kırmızı elbiseli kız merdiven çıkıyor", "iki köpek", "deniz kenarında yürüyen bir adam ve uzun bir"
            " cümle daha", "ışıklı bir şehir gecesi", "a", "bir çocuk parkta top oynuyor"]
CPU = torch.device("cpu")


def lora_model(folder, layers, dropout=0.0):
    """The tiny CLIP (2 text layers) with text LoRA in the top `layers`, its B matrices made non-zero (a fresh
    adapter is the identity, which would hide a LoRA layer that the prefix path skipped)."""
    torch.manual_seed(0)
    model = attach_lora(load_clip(str(folder)).model, LoraSettings(towers="text", dropout=dropout, layers=layers))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    return model.train()


def items(captions=CAPTIONS, lang="tr"):
    return [Item(i, c, lang) for i, c in enumerate(captions)]


@pytest.mark.parametrize("layers", [1, 2])
def test_prefix_features_and_a_step_equal_the_full_tower(tiny_model, layers):
    clip = load_clip(str(tiny_model))
    prefix_model, full_model = lora_model(tiny_model, layers), lora_model(tiny_model, layers)
    image = torch.randn(len(CAPTIONS), prefix_model.config.projection_dim)
    results = []
    for model, path in ((prefix_model, PrefixText(prefix_model, clip.text, layers, CPU, "fp32", buckets=3)),
                        (full_model, FullText(clip.text))):
        text = path.features(model, **path.inputs(items(), CPU))
        loss = clip_loss(text, image, model.logit_scale)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        optimizer.step()
        after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((text.detach(), grads, after))
    (text_a, grads_a, after_a), (text_b, grads_b, after_b) = results
    torch.testing.assert_close(text_a, text_b, atol=1e-5, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4, msg=name)
        torch.testing.assert_close(after_a[name], after_b[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_stored_prefix_is_the_whole_towers_residual_stream_in_either_precision(tiny_model, precision):
    """Stored in float32, the residual stream's precision under autocast too: bit for bit what the whole tower
    carries into its top layers (a bf16 copy was not), so with every layer on the prefix path the features are
    the whole tower's exactly, and with one on it they differ only by how bf16 rounds the last layer."""
    clip = load_clip(str(tiny_model))
    for layers in (1, 2):
        model = lora_model(tiny_model, layers).eval()
        path = PrefixText(model, clip.text, layers, CPU, precision)
        path.remember(CAPTIONS, "tr")
        ordered = sorted(set(CAPTIONS), key=lambda t: (len(t), t))  # one batch of the pass, padded the same way
        with torch.no_grad(), autocast(CPU, precision):
            hidden = model.get_base_model().text_model(**clip.text(ordered, "tr"), output_hidden_states=True)
            full = text_features(model, **clip.text(CAPTIONS, "tr")).float()
            text = path.features(model, **path.inputs(items(), CPU)).float()
        for i, caption in enumerate(ordered):
            state, pool = path.state(caption, "tr")
            assert state.dtype == torch.float32 and torch.equal(state, hidden.hidden_states[2 - layers][i, : pool + 1])
        exact = layers == 2 or precision == "fp32"
        torch.testing.assert_close(text, full, atol=1e-5 if exact else 0.02, rtol=1e-5 if exact else 0)


def test_prefixes_live_on_disk_and_captions_first_met_in_a_step_are_computed_then(tiny_model, monkeypatch):
    clip = load_clip(str(tiny_model))
    model = lora_model(tiny_model, 1)
    path = PrefixText(model, clip.text, 1, CPU, "fp32")
    path.remember(CAPTIONS, "tr")
    (store,) = path.stores
    positions = sum(path.state(c, "tr")[0].shape[0] for c in set(CAPTIONS))
    assert not path.memo and store.data.stat().st_size == positions * model.config.text_config.hidden_size * 4
    monkeypatch.setattr(PrefixText, "_compute", lambda *a: pytest.fail("a remembered caption computed again"))
    path.inputs(items(), CPU)  # read from the store
    monkeypatch.undo()
    path.inputs(items(["yeni bir cümle"]), CPU)  # a caption first met in a step is computed then
    assert list(path.memo) == [("yeni bir cümle", "tr")]


def test_two_processes_with_different_string_hash_seeds_share_the_prefix_cache(tiny_model, tmp_path):
    """The cache key may not depend on Python's per-process string hashing (set order): captions of equal length
    are ordered by their text, so a second process finds the first one's entry."""
    script = tmp_path / "remember.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from test_text_prefix import lora_model, CPU
from turkclip.roads import load_clip
from turkclip.roads.text_prefix import PrefixText
computed = []
real = PrefixText._compute
PrefixText._compute = lambda self, texts, lang: computed.append(len(texts)) or real(self, texts, lang)
clip = load_clip({str(tiny_model)!r})
captions = ["kedi bir", "köpek iki", "bir kedi", "iki kedi", "kuş uçar", "at koşar", "bir at", "iki at"]
path = PrefixText(lora_model({str(tiny_model)!r}, 1), clip.text, 1, CPU, "fp32")
path.remember(captions, "tr", {str(tmp_path / "c")!r})
print(sum(computed))
""")
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(int(done.stdout.split()[-1]))
    assert runs == [8, 0]  # the second process computed nothing
    assert len(list((tmp_path / "c").glob("text-prefix-*.npz"))) == 1


def test_pool_position_follows_transformers_rule():
    ids = torch.tensor([[49406, 320, 49407, 49407], [49406, 49407, 5, 49407]])
    assert pool_positions(ids, 49407).tolist() == [2, 1]  # the first end-of-text token
    assert pool_positions(ids, 2).tolist() == [2, 1]  # old configs: the highest id (first of equals)


def test_lora_only_in_the_top_layers_and_the_adapter_reloads(tiny_model, tmp_path):
    model = lora_model(tiny_model, 1)
    modules = {re.sub(r"\.lora_[AB]\..*", "", n) for n, _ in model.named_parameters() if ".lora_" in n}
    assert modules == {f"base_model.model.text_model.encoder.layers.1.self_attn.{m}" for m in ("q_proj", "v_proj")}
    model.save_pretrained(tmp_path / "adapter")
    clip = load_clip(str(tiny_model))
    tokens = clip.text(CAPTIONS, "tr")
    model.eval()
    with torch.no_grad():
        want = text_features(model, **tokens)
        for loaded in (load_adapter(CLIPModel.from_pretrained(tiny_model), tmp_path / "adapter"),
                       PeftModel.from_pretrained(CLIPModel.from_pretrained(tiny_model), tmp_path / "adapter")):
            torch.testing.assert_close(text_features(loaded.eval(), **tokens), want, atol=1e-5, rtol=0)
        plain = CLIPModel.from_pretrained(tiny_model)
        plain.load_adapter(str(tmp_path / "adapter"))
        torch.testing.assert_close(text_features(plain.eval(), **tokens), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("settings, message", [
    (LoraSettings(towers="text", layers=3), "between 1 and the text tower's 2 layers"),
    (LoraSettings(towers="text", layers=0), "between 1 and"),
    (LoraSettings(towers="both", layers=1), "needs --lora-towers text"),
])
def test_impossible_layer_counts_are_refused(tiny_model, settings, message):
    with pytest.raises(TurkclipError, match=message):
        attach_lora(load_clip(str(tiny_model)).model, settings)


def run_train(tiny_model, tmp_path, name, **kw):
    (tmp_path / name).mkdir()
    captions, images = write_captioned_images(tmp_path / name, 8, lambda i: [f"resim {i} bir köpek", f"{i} kedi"])
    cfg = TrainConfig(captions=str(captions), images=str(images), output=str(tmp_path / name / "out"),
                      model=str(tiny_model), epochs=2, batch_size=4, lr=1e-2, precision="fp32", progress=False,
                      cache_dir=str(tmp_path / "cache"), val_split=None, **kw)
    train(cfg)
    return tmp_path / name / "out"


def test_train_with_lora_layers_matches_the_full_tower_path(tiny_model, tmp_path, monkeypatch):
    """Two epochs through train(): the remembered-prefix path ends with the same adapter as the full tower."""
    from safetensors.torch import load_file

    from turkclip.roads.lora import LoraRoad

    lora = lambda: LoraSettings(towers="text", dropout=0.0, layers=1)  # noqa: E731
    chosen = []
    real = LoraRoad.text_path
    monkeypatch.setattr(LoraRoad, "text_path", lambda road, data: chosen.append(real(road, data)) or chosen[-1])
    fast = run_train(tiny_model, tmp_path, "prefix", lora=lora())
    assert isinstance(chosen[-1], PrefixText)
    monkeypatch.setattr(LoraRoad, "text_path", lambda road, data: FullText(road.clip.text))
    slow = run_train(tiny_model, tmp_path, "full", lora=lora())
    a, b = load_file(fast / "adapter_model.safetensors"), load_file(slow / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all("layers.1." in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    load_adapter(CLIPModel.from_pretrained(tiny_model), fast)


def test_token_rows_both_towers_or_every_layer_take_the_full_tower_path(tiny_model, tmp_path, monkeypatch):
    from turkclip.roads.lora import LoraRoad

    chosen = []
    real = LoraRoad.text_path
    monkeypatch.setattr(LoraRoad, "text_path", lambda road, data: chosen.append(real(road, data)) or chosen[-1])
    run_train(tiny_model, tmp_path, "rows", lora=LoraSettings(towers="text", layers=1), train_token_rows="all")
    run_train(tiny_model, tmp_path, "both", lora=LoraSettings(towers="both"))
    run_train(tiny_model, tmp_path, "text", lora=LoraSettings(towers="text"))  # no --lora-layers: as before
    assert [type(p) for p in chosen] == [FullText, FullText, FullText]


def test_cli_refusals_are_one_line(tiny_model, tmp_path, capsys):
    captions, images = write_captioned_images(tmp_path, 4, lambda i: [f"resim {i}"])
    flags = ["train", "--model", str(tiny_model), "--captions", str(captions), "--images", str(images),
             "--output", str(tmp_path / "out"), "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    for extra, phrase in ((["--lora-towers", "text", "--lora-layers", "5"], "between 1 and the text tower's 2"),
                          (["--lora-layers", "1"], "needs --lora-towers text")):
        assert cli(flags + extra) == 1
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and phrase in err[0], err


def test_flag_combinations_are_refused_before_any_data_is_read(tiny_model, tmp_path, capsys):
    flags = ["train", "--model", str(tiny_model), "--captions", str(tmp_path / "missing.csv"), "--images",
             str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"), "--no-progress"]
    for extra, phrase in ((["--lora-layers", "1"], "needs --lora-towers text"),
                          (["--lora-layers", "1", "--text-model", str(tmp_path / "e5")], "with a --text-model, --text-layers N"),
                          (["--negatives", "bank"], "needs a frozen image tower (--lora-towers text")):
        assert cli(flags + extra) == 1
        err = capsys.readouterr().err
        assert phrase in err and "missing.csv" not in err, err


def test_the_prefix_pass_is_read_from_the_disk_cache_and_keyed_by_the_frozen_weights(tiny_model, tmp_path,
                                                                                    monkeypatch):
    clip = load_clip(str(tiny_model))
    first = PrefixText(lora_model(tiny_model, 1), clip.text, 1, CPU, "fp32")
    first.remember(CAPTIONS, "tr", tmp_path)
    assert len(list(tmp_path.glob("text-prefix-*.npz"))) == 1
    again = PrefixText(lora_model(tiny_model, 1), clip.text, 1, CPU, "fp32")
    monkeypatch.setattr(PrefixText, "_compute", lambda *a: pytest.fail("the pass ran again"))
    again.remember(list(reversed(CAPTIONS)), "tr", tmp_path)  # another order: the same entry
    assert again.where.keys() == first.where.keys()
    for caption in CAPTIONS:
        (state, pool), (want, want_pool) = again.state(caption, "tr"), first.state(caption, "tr")
        assert torch.equal(state, want) and pool == want_pool
    monkeypatch.undo()
    changed = lora_model(tiny_model, 1)
    with torch.no_grad():  # another frozen lower layer: another entry, not a stale hit
        changed.get_base_model().text_model.encoder.layers[0].mlp.fc1.weight.add_(0.1)
    PrefixText(changed, clip.text, 1, CPU, "fp32").remember(CAPTIONS, "tr", tmp_path)
    assert len(list(tmp_path.glob("text-prefix-*.npz"))) == 2
