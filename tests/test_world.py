import json
import re
import time

import pytest
from PIL import Image

from turkclip.data.parallel import read_parallel
from turkclip_train.demo.world import (
    Group,
    Scene,
    build_tokenizer,
    build_world,
    english_captions,
    locative,
    plural,
    turkish_captions,
)

SMALL = dict(n_train=60, n_val=16, n_test=24, image_size=32, workers=1)


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def pairs_in_english(caption):
    # English captions always put the colour right before the shape.
    return set(re.findall(r"(\w+) (circle|square|triangle|star)s?\b", caption))


def turkish_patterns(heldout):
    """What a Turkish caption naming a held-out pair contains, e.g. "yeşil bir yıldız"."""
    colour_tr = {"red": "kırmızı", "blue": "mavi", "green": "yeşil", "yellow": "sarı", "purple": "mor",
                 "orange": "turuncu", "white": "beyaz", "black": "siyah"}
    shape_tr = {"circle": "daire", "square": "kare", "triangle": "üçgen", "star": "yıldız"}
    return [re.compile(rf"\b{colour_tr[c]} (bir )?{shape_tr[s]}\b") for c, s in heldout]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"), seed=0, **SMALL)


def test_format_and_splits_disjoint(world):
    en, tr = load(world.english), load(world.turkish)
    assert en["dataset"] == tr["dataset"] == "turkclip-demo"
    splits = {}
    for image in en["images"]:
        assert set(image) == {"split", "filename", "imgid", "sentences"}
        assert image["filename"] == f"{image['imgid']:05d}.png"
        assert 3 <= len(image["sentences"]) <= 4
        for s in image["sentences"]:
            assert s["imgid"] == image["imgid"] and s["raw"] == s["raw"].lower()
        # The first caption names every attribute, so it stands for the scene.
        splits.setdefault(image["split"], set()).add(image["sentences"][0]["raw"])
    assert {k: len(v) for k, v in splits.items()} == {"train": 60, "val": 16, "test": 24}
    assert not splits["train"] & splits["val"]
    assert not splits["train"] & splits["test"]
    assert not splits["val"] & splits["test"]
    sentids = [s["sentid"] for image in tr["images"] for s in image["sentences"]]
    assert len(sentids) == len(set(sentids))


def test_heldout_only_outside_turkish_train(world):
    en, tr = load(world.english), load(world.turkish)
    heldout = set(world.heldout)
    assert len(heldout) == 3
    en_by_id = {image["imgid"]: image for image in en["images"]}
    with_heldout = {"train": 0, "val": 0, "test": 0}
    for image in tr["images"]:
        english = en_by_id[image["imgid"]]
        assert english["split"] == image["split"] and english["filename"] == image["filename"]
        if pairs_in_english(english["sentences"][0]["raw"]) & heldout:
            with_heldout[image["split"]] += 1
    assert with_heldout["train"] == 0
    assert with_heldout["test"] > 0 and with_heldout["val"] > 0
    # Turkish train is English train minus the held-out scenes, nothing else.
    en_train = [i for i in en["images"] if i["split"] == "train"]
    kept = [i for i in en_train if not pairs_in_english(i["sentences"][0]["raw"]) & heldout]
    assert [i["imgid"] for i in kept] == [i["imgid"] for i in tr["images"] if i["split"] == "train"]
    # Turkish captions really name the held-out pair in test, e.g. "yeşil bir yıldız".
    patterns = turkish_patterns(heldout)
    named = {"train": 0, "val": 0, "test": 0}
    for image in tr["images"]:
        if any(p.search(s["raw"]) for p in patterns for s in image["sentences"]):
            named[image["split"]] += 1
    assert named["train"] == 0 and named["test"] > 0


def test_parallel_corpus_is_the_turkish_train_scenes_translated_and_nothing_held_out(world):
    en, tr = load(world.english), load(world.turkish)
    corpus = read_parallel(world.parallel)  # read as a user's translation corpus is (header en<TAB>tr)
    assert world.parallel.read_text(encoding="utf-8").startswith("en\ttr\n") and corpus.bad_lines == 0
    # One caption of each scene whose Turkish is trained on, beside its translation (the same template).
    en_by_id = {image["imgid"]: image for image in en["images"]}
    trained = [image for image in tr["images"] if image["split"] == "train"]
    assert len(corpus.pairs) == len(trained)
    for (english, turkish), image in zip(corpus.pairs, trained):
        k = [t["raw"] for t in image["sentences"]].index(turkish)
        assert en_by_id[image["imgid"]]["sentences"][k]["raw"] == english
    assert len({[t["raw"] for t in i["sentences"]].index(tr) for (_, tr), i in zip(corpus.pairs, trained)}) == 4
    # No sentence of a val or test scene that no train scene shares (short captions may coincide across scenes).
    sentences = {split: {(lang, s["raw"]) for lang, doc in (("en", en), ("tr", tr)) for image in doc["images"]
                         if image["split"] == split for s in image["sentences"]} for split in ("train", "val", "test")}
    only_held_out = (sentences["val"] | sentences["test"]) - sentences["train"]
    in_corpus = {("en", e) for e, _ in corpus.pairs} | {("tr", t) for _, t in corpus.pairs}
    assert only_held_out and not in_corpus & only_held_out
    # And no held-out colour–shape pair, on either side.
    heldout = set(world.heldout)
    assert not any(pairs_in_english(e) & heldout for e, _ in corpus.pairs)
    assert not any(p.search(t) for p in turkish_patterns(heldout) for _, t in corpus.pairs)


def test_a_cached_world_without_the_corpus_gets_it_without_a_rebuild(tmp_path):
    first = build_world(tmp_path, seed=2, **SMALL)
    text = first.parallel.read_text(encoding="utf-8")
    first.parallel.unlink()
    stamp = first.english.stat().st_mtime_ns
    assert build_world(tmp_path, seed=2, **SMALL) == first
    assert first.parallel.read_text(encoding="utf-8") == text and first.english.stat().st_mtime_ns == stamp


def test_images_open_at_right_size(world):
    en = load(world.english)
    for image in en["images"][:10]:
        with Image.open(world.images / image["filename"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    assert len(list(world.images.glob("*.png"))) == 100


def test_deterministic(tmp_path):
    a = build_world(tmp_path / "a", seed=3, **SMALL)
    b = build_world(tmp_path / "b", seed=3, **{**SMALL, "workers": 2})
    c = build_world(tmp_path / "c", seed=4, **SMALL)
    assert load(a.english) == load(b.english) and load(a.turkish) == load(b.turkish)
    assert a.heldout == b.heldout
    for name in ("00000.png", "00037.png", "00099.png"):
        assert (a.images / name).read_bytes() == (b.images / name).read_bytes()
    assert load(a.english) != load(c.english)
    assert (a.images / "00000.png").read_bytes() != (c.images / "00000.png").read_bytes()


def test_cached_second_call(tmp_path):
    first = build_world(tmp_path, seed=1, **SMALL)
    watched = [first.english, first.turkish, tmp_path / "world.json", first.images / "00005.png"]
    stamps = [p.stat().st_mtime_ns for p in watched]
    start = time.perf_counter()
    second = build_world(tmp_path, seed=1, **SMALL)
    assert time.perf_counter() - start < 0.5
    assert second == first
    assert [p.stat().st_mtime_ns for p in watched] == stamps
    # Different arguments rebuild in place, and leave no stale images behind.
    third = build_world(tmp_path, seed=1, **{**SMALL, "n_train": 30})
    assert len(list(third.images.glob("*.png"))) == 70
    assert sum(i["split"] == "train" for i in load(third.english)["images"]) == 30


def test_turkish_suffixes():
    assert [locative(w) for w in ["sol", "sağ", "üst", "alt", "orta", "zemin", "plan", "kitap"]] == [
        "solda", "sağda", "üstte", "altta", "ortada", "zeminde", "planda", "kitapta"]
    assert [plural(w) for w in ["şekil", "daire", "yıldız", "üçgen"]] == ["şekiller", "daireler", "yıldızlar", "üçgenler"]


def test_exact_captions():
    scene = Scene("gray", (Group("red", "circle", "small", 2, "left"), Group("blue", "square", "small", 1, "top")))
    assert turkish_captions(scene) == [
        "gri zemin üzerinde solda iki küçük kırmızı daire ve üstte küçük mavi bir kare",
        "solda iki küçük kırmızı daire ve üstte küçük mavi bir kare bulunan gri bir resim",
        "gri arka planda solda iki küçük kırmızı daire ve üstte küçük mavi bir kare var",
        "gri zemindeki şekiller: iki kırmızı daire ve mavi bir kare",
    ]
    assert english_captions(scene)[0] == (
        "two small red circles on the left and a small blue square at the top, on a gray background")

    scene = Scene("yellow", (Group("red", "circle", "big", 1, "bottom"),
                             Group("orange", "star", "small", 3, "middle"),
                             Group("white", "triangle", "big", 1, "right")))
    tr = turkish_captions(scene)
    assert tr[0] == ("sarı zemin üzerinde altta büyük kırmızı bir daire, ortada üç küçük turuncu yıldız "
                     "ve sağda büyük beyaz bir üçgen")
    assert tr[3] == "sarı zemindeki şekiller: kırmızı bir daire, üç turuncu yıldız ve beyaz bir üçgen"
    assert english_captions(scene)[3] == (
        "the shapes on the yellow background: a red circle, three orange stars and a white triangle")

    # A single shape: singular "şekil", "an" before a vowel.
    scene = Scene("black", (Group("orange", "triangle", "big", 1, "left"),))
    assert turkish_captions(scene)[3] == "siyah zemindeki şekil: turuncu bir üçgen"
    assert english_captions(scene)[3] == "the shape on the black background: an orange triangle"


def test_no_plural_after_numbers(world):
    # Turkish keeps the noun singular after a number: "iki daire", never "iki daireler".
    for image in load(world.turkish)["images"]:
        for s in image["sentences"]:
            assert not re.search(r"(daire|kare|üçgen|yıldız)l[ae]r", s["raw"])
            assert not re.search(r"\bbir (küçük|büyük)\b", s["raw"])


def test_tokenizer_round_trip(world, tmp_path):
    from transformers import AutoTokenizer

    texts = [s["raw"] for path in (world.english, world.turkish)
             for image in load(path)["images"] for s in image["sentences"]]
    build_tokenizer(texts, tmp_path / "tok", vocab_size=400)
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.is_fast
    assert tok.bos_token == "<|startoftext|>" and tok.eos_token == "<|endoftext|>"
    assert tok.pad_token_id == tok.eos_token_id != tok.bos_token_id
    assert tok.eos_token_id != 2  # CLIP's text tower treats eos id 2 as a legacy argmax case
    assert len(tok) <= 400

    caption = "gri zemin üzerinde solda iki küçük kırmızı daire ve üstte büyük mavi bir kare"
    ids = tok(caption)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.eos_token_id not in ids[:-1] and tok.bos_token_id not in ids[1:]
    assert tok.decode(ids, skip_special_tokens=True) == caption

    batch = tok([caption, "sağda bir yıldız"], padding="max_length", max_length=32, truncation=True)
    short, mask = batch["input_ids"][1], batch["attention_mask"][1]
    n = sum(mask)
    assert short[n - 1] == tok.eos_token_id and all(i == tok.eos_token_id for i in short[n:])
    assert short.index(tok.eos_token_id) == n - 1  # the first eos is the end of the text
    # No training caption is cut off at model_max_length.
    longest = max(len(tok(t)["input_ids"]) for t in texts)
    assert longest <= tok.model_max_length and tok.model_max_length >= 32
    # Unseen characters still encode (byte level), no unknown tokens needed.
    assert tok.decode(tok("öğrenci şöför")["input_ids"], skip_special_tokens=True) == "öğrenci şöför"
