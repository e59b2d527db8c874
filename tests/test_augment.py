"""Augmentation that keeps captions true: caption flipping, deterministic image transforms, policy
parsing, exact resume with augmentation on, and the text-only view cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import turkclip
from conftest import write_captioned_images
from turkclip.data.augment import AugmentPolicy, augment_batch, draw, flip_coin, parse_policy
from turkclip.data.dataset import ImageTextSet
from turkclip.data.flip_caption import UnsafeFlip, flipped_or_none
from turkclip.data.images import Preprocess
from turkclip.data.sampling import epoch_batches
from turkclip.embedding import views as augment_views
from turkclip.errors import TurkclipError
from turkclip.roads.settings import LoraSettings
from turkclip_train import checkpoint
from turkclip_train.cli import main
from turkclip_train.config import TrainConfig
from turkclip_train.train import train

# ---------------------------------------------------------------- captions

TURKISH = [  # (caption, caption of the mirrored image)
    ("solda iki kırmızı daire", "sağda iki kırmızı daire"),
    ("sola koşan köpek", "sağa koşan köpek"),
    ("soldan gelen araba", "sağdan gelen araba"),
    ("adamın sağında bir kedi", "adamın solunda bir kedi"),  # four-way harmony: ı after sağ, u after sol
    ("kızın soluna bakıyor", "kızın sağına bakıyor"),
    ("solundaki çocuk", "sağındaki çocuk"),
    ("soldaki adam ve sağdaki kadın", "sağdaki adam ve soldaki kadın"),
    ("sağdan sola yürüyen kız", "soldan sağa yürüyen kız"),
    ("sağ tarafta bir ağaç", "sol tarafta bir ağaç"),
    ("sol elinde top tutan çocuk", "sağ elinde top tutan çocuk"),
    ("sağdakinin şapkası", "soldakinin şapkası"),
    ("resmin sağı boş", "resmin solu boş"),
    ("sollu sağlı ağaçlar", "sağlı sollu ağaçlar"),
    ("SOLDA BİR KÖPEK", "SAĞDA BİR KÖPEK"),
    ("Sağda duran adam", "Solda duran adam"),
    ("SAĞINDAKİ KIZ", "SOLUNDAKİ KIZ"),
]
LOOKALIKES = ["solmuş çiçekler", "sağlam bir ip", "sağlık ocağı", "solist şarkı söylüyor", "solgun yüzlü adam",
              "sağır bir adam", "sağdıçlar dans ediyor", "nefes nefese soluyor", "toprakta bir solucan",
              "sağ salim dönen adam", "düzenli solunum", "destek sağlamaya çalışan"]
ENGLISH = [
    ("a dog on the left", "a dog on the right"),
    ("the woman to the right of the car", "the woman to the left of the car"),
    ("a boy holds a ball in his left hand", "a boy holds a ball in his right hand"),
    ("the man's right arm", "the man's left arm"),
    ("a left-hand turn", "a right-hand turn"),
    ("the upper left corner", "the upper right corner"),
    ("cars drive from left to right", "cars drive from right to left"),
    ("a dog looks left", "a dog looks right"),
    ("On the Left, a RIGHT-handed pitcher", "On the Right, a LEFT-handed pitcher"),
]
ENGLISH_KEPT = ["the man left the room", "a skier has left a trail", "water left behind by the sprinklers",
                "a dog right behind the cat", "a park right outside the city", "it is all right", "a bright light"]
ENGLISH_UNSAFE = ["a car turns right at the corner", "the guests left", "Left, a man sits"]


@pytest.mark.parametrize("caption, mirrored", TURKISH)
def test_turkish_sides_swap_with_harmony_and_case(caption, mirrored):
    assert turkclip.flip_caption(caption, "tr") == mirrored
    assert turkclip.flip_caption(mirrored, "tr") == caption


@pytest.mark.parametrize("caption", LOOKALIKES)
def test_turkish_words_that_only_begin_like_sol_or_sag_stay(caption):
    assert turkclip.flip_caption(caption, "tr") == caption


def test_turkish_without_its_letters_is_not_flipped():
    """"sagda" (sağda typed in ASCII) names a side this module would leave unswapped: the item must not be flipped."""
    assert flipped_or_none("solda bir kedi, sagda bir köpek", "tr") is None


@pytest.mark.parametrize("caption, mirrored", ENGLISH)
def test_english_positions_swap(caption, mirrored):
    assert turkclip.flip_caption(caption, "en") == mirrored


@pytest.mark.parametrize("caption", ENGLISH_KEPT)
def test_english_left_as_verb_and_right_as_directly_stay(caption):
    assert turkclip.flip_caption(caption, "en") == caption


@pytest.mark.parametrize("caption", ENGLISH_UNSAFE)
def test_ambiguous_english_is_refused(caption):
    assert flipped_or_none(caption, "en") is None
    with pytest.raises(UnsafeFlip, match="cannot flip"):
        turkclip.flip_caption(caption, "en")


def test_unknown_language_is_an_error():
    with pytest.raises(TurkclipError, match="Turkish and English only"):
        turkclip.flip_caption("links", "de")


# ---------------------------------------------------------------- policy


@pytest.mark.parametrize("text, error", [
    ("rotate", "unknown augmentation 'rotate'"), ("", "comma list"), ("crop,,flip", "comma list"),
    ("none,flip", "cannot be combined"), ("flip,flip", "listed twice"), ("flip:0.5", "takes no value"),
])
def test_policy_errors_are_one_line(text, error):
    with pytest.raises(TurkclipError, match=error) as e:
        parse_policy(text)
    assert "\n" not in str(e.value)


def test_policy_parsing_and_canonical_form():
    p = parse_policy("flip, crop", crop_scale="0.5,0.9")
    assert (p.crop, p.flip, p.color, p.crop_scale) == (True, True, False, (0.5, 0.9))
    assert parse_policy(str(p)) == p and str(parse_policy("none")) == "none" and not parse_policy("none").active
    for scale in ("0,1", "0.9,0.5", "1.2,1.5", "a,b", "0.5"):
        with pytest.raises(TurkclipError, match="--crop-scale"):
            parse_policy("crop", crop_scale=scale)
    with pytest.raises(TurkclipError, match="cannot be flipped"):
        parse_policy("crop,flip", langs=["tr", "de"])
    assert parse_policy("crop", langs=["de"]).crop  # only flip needs to know the language
    with pytest.raises(TurkclipError, match="add crop to --augment"):
        parse_policy("flip", crop_scale="0.5,1")  # a scale for a crop that is not asked for: not silently ignored


def test_cli_rejects_bad_policy_in_one_line(tmp_path, capsys):
    status = main(["train", "--captions", str(tmp_path / "c.csv"), "--images", str(tmp_path), "--output",
                   str(tmp_path / "o"), "--augment", "crop,mirror"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and "unknown augmentation 'mirror'" in err[0]
    assert "what each does to captions" not in err[0]


def test_help_says_what_each_augmentation_does_to_captions(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "swap the caption's left/right words" in text and "captions unchanged" in text


# ---------------------------------------------------------------- pixels

ALL = AugmentPolicy(crop=True, flip=True, color=True)


def _pixels(n: int = 6, size: int = 32) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def test_image_transforms_are_a_function_of_seed_epoch_and_image():
    px = _pixels()
    a = augment_batch(px, [0, 1, 2, 3], [True, False, True, False], ALL, seed=5, epoch=2)
    assert a.dtype == torch.uint8 and a.shape == (4, 3, 32, 32)
    assert torch.equal(a, augment_batch(px, [0, 1, 2, 3], [True, False, True, False], ALL, seed=5, epoch=2))
    # the same image in another batch, at another place, gets the same pixels
    assert torch.equal(a[2], augment_batch(px, [5, 2], [False, True], ALL, seed=5, epoch=2)[1])
    assert not torch.equal(a, augment_batch(px, [0, 1, 2, 3], [True, False, True, False], ALL, seed=5, epoch=3))
    assert not torch.equal(a, augment_batch(px, [0, 1, 2, 3], [True, False, True, False], ALL, seed=6, epoch=2))
    assert draw(ALL, 5, 0, 32, epoch=0) != draw(ALL, 5, 0, 32, view=0)  # views are not epochs


def test_flip_mirrors_and_crop_keeps_size():
    px = _pixels()
    flipped = augment_batch(px, [0, 1], [True, False], AugmentPolicy(flip=True), seed=0, epoch=0)
    assert torch.equal(flipped[0], px[0].flip(-1)) and torch.equal(flipped[1], px[1])
    full = AugmentPolicy(crop=True, crop_scale=(1.0, 1.0))
    boxes = [draw(full, 0, i, 32, epoch=0).box for i in range(6)]
    assert all(h * w >= 0.9 * 32 * 32 for _, _, h, w in boxes)
    small = [draw(AugmentPolicy(crop=True, crop_scale=(0.3, 0.3)), 0, i, 32, epoch=0).box for i in range(6)]
    assert all(0.2 < h * w / 32**2 < 0.4 for _, _, h, w in small)


def test_flip_decision_is_pure_and_only_for_safe_captions():
    captions = [["solda bir kedi"], ["sağdaki köpek"], ["the guests left"], ["mavi kare"]] * 5
    langs = ["tr", "tr", "en", "tr"] * 5
    a = epoch_batches(captions, "tr", 4, seed=3, epoch=1, flip=True)
    assert a == epoch_batches(captions, "tr", 4, seed=3, epoch=1, flip=True)
    items = [it for batch in a for it in batch]
    assert any(it.flip for it in items) and any(not it.flip for it in items)
    for it in items:
        original = captions[it.image][0]
        if it.flip:
            assert flip_coin(3, 1, it.image) and it.text == turkclip.flip_caption(original, "tr")
        else:
            assert it.text == original
    # English rehearsal captions flip as English; an unsafe one is never flipped
    rehearsal = [["the guests left"]] * len(captions)
    items = [it for b in epoch_batches(captions, "tr", 4, 3, 1, rehearsal, "en", 1.0, flip=True) for it in b]
    assert all(it.lang == "en" and not it.flip for it in items)
    assert len(langs) == len(captions)


# ---------------------------------------------------------------- training


def _write_data(root: Path) -> tuple[Path, Path]:
    return write_captioned_images(root, 9, lambda i: [f"solda kırmızı bir şey {i}", f"sağındaki mavi şey {i}"])


class _Crash(Exception):
    pass


@pytest.mark.parametrize("towers", ["both", "text"])
def test_resume_with_augmentation_equals_uninterrupted(tiny_model, tmp_path, monkeypatch, towers):
    """A run that dies right after its 5th checkpoint (mid epoch 2), resumed, ends with the uninterrupted adapter."""
    captions, images = _write_data(tmp_path)

    def config(name: str, resume: bool = False) -> TrainConfig:
        return TrainConfig(captions=str(captions), images=str(images), output=str(tmp_path / name),
                           model=str(tiny_model), epochs=2, batch_size=2, lr=1e-3, precision="fp32", seed=3,
                           lora=LoraSettings(r=4, alpha=4, dropout=0.3, towers=towers), augment="crop:0.5-1,flip,color",
                           augment_views=3, checkpoint_every=1, progress=False, resume=resume,
                           cache_dir=str(tmp_path / "cache"))

    train(config("reference"))
    real_save, saves = checkpoint.save, []

    def save_then_die(*args):
        real_save(*args)
        saves.append(args[4])  # the position (args: folder, model, optimizer, scheduler, position, rng)
        if len(saves) == 5:
            raise _Crash

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(_Crash):
        train(config("crashed"))
    assert saves[-1]["epoch"] == 1 and saves[-1]["step"] == 1  # mid epoch 2
    monkeypatch.setattr(checkpoint, "save", real_save)
    train(config("crashed", resume=True))
    a, b = (load_file(tmp_path / n / "adapter_model.safetensors") for n in ("reference", "crashed"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)

    with pytest.raises(TurkclipError, match="--augment crop:0.5-1,flip \\(was crop:0.5-1,flip,color\\)"):
        train(TrainConfig(**{**config("crashed", resume=True).__dict__, "augment": "crop:0.5-1,flip"}))


def test_view_cache_is_keyed_by_policy(tiny_model, tmp_path, monkeypatch):
    clip = turkclip.load_clip(str(tiny_model))
    data = ImageTextSet([f"{i}.png" for i in range(5)], _pixels(5, 32), [["solda"]] * 5, "tr", [])
    calls = []
    real_embed = augment_views.embed_images
    monkeypatch.setattr(augment_views, "embed_images", lambda *a, **k: calls.append(1) or real_embed(*a, **k))
    cpu, cache = torch.device("cpu"), tmp_path / "cache"

    def bank(policy: str, views: int = 3, seed: int = 0):
        return augment_views.view_bank(clip.model, data, Preprocess(size=32), cpu, "fp32", cache, parse_policy(policy),
                                       seed, views)

    first = bank("crop,flip")
    assert first.embeds.shape[:3] == (3, 2, 5) and len(calls) == 6  # 3 views, plain and mirrored
    assert torch.equal(bank("crop,flip").embeds, first.embeds) and len(calls) == 6  # read back, not recomputed
    other = bank("crop:0.3-0.5,flip")
    assert len(calls) == 12 and not torch.equal(other.embeds, first.embeds)
    bank("crop,flip", views=2)
    bank("crop,flip", seed=1)
    assert len(calls) == 22 and len(list(cache.iterdir())) == 4
    assert bank("flip").embeds.shape[:2] == (1, 2)  # flip only: one view, plain and mirrored

    # the epoch's bank: one view per image, the mirrored embedding exactly where the item is flipped
    batches = epoch_batches(data.captions, "tr", 2, seed=0, epoch=4, flip=True)
    epoch = first.for_epoch(4, batches)
    for item in (it for b in batches for it in b):
        assert any(torch.equal(epoch[item.image], first.embeds[v, int(item.flip), item.image]) for v in range(3))
    with pytest.raises(TurkclipError, match="--augment-views 0"):
        bank("crop", views=0)
