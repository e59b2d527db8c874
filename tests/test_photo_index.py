"""`turkclip index`: build, incremental update, resume after SIGKILL, refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import slowed
from turkclip.errors import TurkclipError
from turkclip.search import photo_index
from turkclip.search.photo_index import build_index, open_index


def _photo(path: Path, seed: int, size=(40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def photos(tiny_images) -> Path:
    """12 JPEGs plus a PNG, a GIF, a WebP and a BMP in a subfolder, a broken .jpg and a text file."""
    _photo(tiny_images / "sub" / "deep.png", 100)
    frames = [Image.new("RGB", (30, 30), c) for c in ("red", "blue")]
    frames[0].save(tiny_images / "sub" / "anim.gif", save_all=True, append_images=frames[1:])
    Image.open(_photo(tiny_images / "sub" / "w.webp", 101)).save(tiny_images / "sub" / "B.BMP")
    (tiny_images / "broken.jpg").write_bytes(b"not a jpeg")
    (tiny_images / "notes.txt").write_text("not a photo")
    return tiny_images


def _build(photos, out, model=None, **kw):
    return build_index(photos, out, None if model is None else str(model), progress=False, **kw)


def test_build_embeds_every_photo_and_reports_unreadable(tiny_model, photos, tmp_path):
    from turkclip.roads import load_clip
    from turkclip.search.queries import encode_photo

    report = _build(photos, tmp_path / "idx", tiny_model, chunk_size=5)
    idx = open_index(tmp_path / "idx")
    assert idx.paths == sorted([f"{i:02d}.jpg" for i in range(12)] + ["sub/B.BMP", "sub/anim.gif", "sub/deep.png", "sub/w.webp"])
    assert [b[0] for b in report.bad] == ["broken.jpg"] and "unreadable" in report.bad[0][3]
    assert (report.added, report.changed, report.removed) == (17, 0, 0)
    assert idx.model == str(tiny_model.resolve()) and idx.adapter is None and idx.text_model is None
    assert torch.allclose(idx.embeddings.norm(dim=1), torch.ones(len(idx.paths)), atol=1e-2)
    assert not (tmp_path / "idx" / "chunks").exists()  # folded into the index when the run finished
    # the stored vector is the photo's own embedding (float16 on disk)
    clip = load_clip(str(tiny_model))
    direct = encode_photo(clip, photos / "sub" / "deep.png")[0]
    assert torch.allclose(idx.embeddings[idx.row("sub/deep.png")], direct, atol=2e-3)


def test_update_embeds_only_new_and_changed_and_drops_deleted(tiny_model, photos, tmp_path, monkeypatch):
    _build(photos, tmp_path / "idx", tiny_model)
    before = open_index(tmp_path / "idx")
    _photo(photos / "new" / "added.jpg", 200)
    changed = _photo(photos / "03.jpg", 300, size=(50, 60))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    (photos / "05.jpg").unlink()
    decoded = []
    real = photo_index.load_images
    monkeypatch.setattr(photo_index, "load_images", lambda root, names, *a, **k: decoded.extend(names) or real(root, names, *a, **k))

    report = _build(photos, tmp_path / "idx")  # no --model: the index's
    after = open_index(tmp_path / "idx")
    assert sorted(decoded) == ["03.jpg", "new/added.jpg"]  # the broken file is remembered, not retried
    assert (report.added, report.changed, report.removed, report.kept) == (1, 1, 1, 14)
    assert "05.jpg" not in after.paths and "new/added.jpg" in after.paths
    assert not torch.allclose(after.embeddings[after.row("03.jpg")], before.embeddings[before.row("03.jpg")])
    assert torch.equal(after.embeddings[after.row("07.jpg")], before.embeddings[before.row("07.jpg")])
    assert after.generation == before.generation + 1


def test_rerun_with_nothing_changed_loads_no_model_and_writes_nothing(tiny_model, photos, tmp_path, monkeypatch):
    _build(photos, tmp_path / "idx", tiny_model)
    stamp = (tmp_path / "idx" / photo_index.INDEX_FILE).stat().st_mtime_ns

    def no_model(*a, **k):
        raise AssertionError("the model was loaded although nothing changed")

    monkeypatch.setattr("turkclip.roads.load_clip", no_model)
    report = _build(photos, tmp_path / "idx")
    assert (report.added, report.changed, report.removed, report.kept) == (0, 0, 0, 16)
    assert (tmp_path / "idx" / photo_index.INDEX_FILE).stat().st_mtime_ns == stamp


def test_sigkill_mid_index_resumes_without_redoing_saved_chunks(tiny_model, tiny_images, tmp_path):
    out = tmp_path / "idx"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cli = slowed.command(1.5, "turkclip.search.photo_index:_save_chunk")  # a pause after each chunk: time to kill
    proc = subprocess.Popen([sys.executable, *cli, "index", str(tiny_images), "--output", str(out),
                             "--model", str(tiny_model), "--chunk-size", "2", "--precision", "fp32", "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(list((out / "chunks").glob("*.safetensors"))) < 2:  # two chunks (4 photos) saved, four to go
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no chunk written in 120 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = len(list((out / "chunks").glob("*.safetensors")))
    assert 2 <= saved < 6
    with pytest.raises(TurkclipError, match="unfinished"):
        open_index(out)

    report = _build(tiny_images, out)  # the model comes from the saved chunks
    assert report.resumed == 2 * saved and report.added == 12 - 2 * saved
    reference = _build(tiny_images, tmp_path / "reference", tiny_model)
    resumed = open_index(out)
    assert resumed.paths == reference.index.paths
    assert torch.allclose(resumed.embeddings, reference.index.embeddings, atol=1e-3)


def test_refusals_are_one_line_errors(tiny_model, photos, tmp_path):
    with pytest.raises(TurkclipError, match="photo folder not found"):
        _build(tmp_path / "nowhere", tmp_path / "idx", tiny_model)
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "thesis.docx").write_text("precious")
    with pytest.raises(TurkclipError, match="not a photo index"):
        _build(photos, tmp_path / "stuff", tiny_model)
    with pytest.raises(TurkclipError, match="no photos"):
        _build(tmp_path / "stuff", tmp_path / "idx", tiny_model)
    _build(photos, tmp_path / "idx", tiny_model)
    with pytest.raises(TurkclipError, match="was built with model"):
        _build(photos, tmp_path / "idx", "openai/clip-vit-base-patch32")
    other = _photo(tmp_path / "other" / "x.jpg", 1).parent
    with pytest.raises(TurkclipError, match="indexes"):
        _build(other, tmp_path / "idx")
    with pytest.raises(TurkclipError, match="is not a photo index"):
        open_index(tmp_path / "stuff")


def test_symlinks_leading_out_are_not_indexed(tiny_model, tiny_images, tmp_path):
    outside = _photo(tmp_path / "private" / "secret.jpg", 7)
    (tiny_images / "link.jpg").symlink_to(outside)
    (tiny_images / "inner.jpg").symlink_to(tiny_images / "00.jpg")
    idx = _build(tiny_images, tmp_path / "idx", tiny_model).index
    assert "link.jpg" not in idx.paths and "inner.jpg" in idx.paths


def test_index_with_an_adapter_records_it_and_uses_it(tiny_model, tiny_images, tmp_path):
    from turkclip.roads import load_clip
    from turkclip.roads.adapters import attach_lora
    from turkclip.roads.settings import LoraSettings

    clip = load_clip(str(tiny_model))
    lora = attach_lora(clip.model, LoraSettings(r=2, alpha=2, dropout=0.0, targets=("q_proj", "v_proj"), towers="both"))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained adapter: LoRA B starts at zero, which would change nothing
    lora.save_pretrained(tmp_path / "adapter")
    plain = _build(tiny_images, tmp_path / "plain", tiny_model).index
    adapted = build_index(tiny_images, tmp_path / "adapted", str(tiny_model), str(tmp_path / "adapter"), progress=False).index
    assert adapted.adapter == str((tmp_path / "adapter").resolve())
    assert not torch.allclose(plain.embeddings, adapted.embeddings, atol=1e-2)
    with pytest.raises(TurkclipError, match="adapter"):
        photo_index.check_model(adapted, None, str(tmp_path / "plain"))
