"""Turkish text normalisation, tokenization with dynamic padding, and the per-epoch batch sampler."""

from collections import Counter

import pytest

from conftest import TOKENIZER, need_shared
from turkclip.data.sampling import epoch_batches
from turkclip.models.text import TextEncoder, normalize


@pytest.fixture(scope="module")
def encoder():
    need_shared(TOKENIZER)
    from transformers import AutoTokenizer

    return TextEncoder(AutoTokenizer.from_pretrained(TOKENIZER), max_length=77)


# --- case folding -------------------------------------------------------------------------------------


def test_turkish_case_folding():
    assert normalize("İSTANBUL") == "istanbul"
    assert normalize("IŞIK") == "ışık"
    assert normalize("KIRMIZI İPLİK ÇÖZÜLDÜ") == "kırmızı iplik çözüldü"
    assert "\u0307" not in normalize("İzmir")  # no combining dot (Python's str.lower leaves one)


def test_english_is_not_case_folded_the_turkish_way():
    assert normalize("ISTANBUL is BIG", lang="en") == "ISTANBUL is BIG"
    assert normalize("  two   spaces\tand\na newline ", lang="en") == "two spaces and a newline"


def test_nfc_normalisation():
    decomposed = "s\u0327u"  # s + combining cedilla
    assert normalize(decomposed) == "şu"


def test_encoder_folds_turkish_before_tokenizing(encoder):
    ids = encoder(["İSTANBUL IŞIK"], "tr")["input_ids"][0].tolist()
    assert ids == encoder.tokenizer(["istanbul ışık"])["input_ids"][0]
    # the tokenizer's own lower-casing gives different (wrong) pieces for the same words
    assert ids != encoder.tokenizer(["İSTANBUL IŞIK"])["input_ids"][0]
    english = encoder(["ISTANBUL"], "en")["input_ids"][0].tolist()
    assert english == encoder.tokenizer(["istanbul"])["input_ids"][0]  # CLIP's lower-casing is right for English


def test_languages_per_caption(encoder):
    batch = encoder(["IŞIK", "IŞIK"], ["tr", "en"])["input_ids"]
    assert batch[0].tolist() != batch[1].tolist()


# --- tokenization --------------------------------------------------------------------------------------


def test_long_caption_is_truncated(encoder):
    long = " ".join(["kırmızı elbiseli küçük kız merdivenden çıkıyor"] * 50)  # 300 words
    batch = encoder([long, "kısa"], "tr")
    assert batch["input_ids"].shape == (2, 77)
    assert batch["input_ids"][0, -1].item() == encoder.tokenizer.eos_token_id  # still ends properly
    assert batch["attention_mask"][0].sum().item() == 77


def test_dynamic_padding(encoder):
    batch = encoder(["bir köpek", "çimenlerde koşan iki köpek ve bir top"], "tr")
    lengths = batch["attention_mask"].sum(1).tolist()
    assert batch["input_ids"].shape[1] == max(lengths) < 77  # padded to the longest, not to 77
    assert lengths[0] < lengths[1]
    assert batch["attention_mask"][0, lengths[0]:].sum() == 0


def test_token_ids(encoder):
    ids = encoder.token_ids(["İSTANBUL"], "tr")
    assert ids == set(encoder.tokenizer(["istanbul"])["input_ids"][0])


# --- epoch_batches -------------------------------------------------------------------------------------


def caption_lists(n, per_image=3):
    return [[f"image {i} caption {k}" for k in range(per_image)] for i in range(n)]


def flat(batches):
    return [it for b in batches for it in b]


def test_each_image_once_per_epoch_never_twice_in_a_batch():
    captions = caption_lists(103)
    for epoch in range(3):
        batches = epoch_batches(captions, "tr", batch_size=16, seed=5, epoch=epoch)
        images = [it.image for it in flat(batches)]
        assert sorted(images) == list(range(103))  # 6 full batches + one of 7: none dropped
        assert all(len({it.image for it in b}) == len(b) for b in batches)
        assert [len(b) for b in batches] == [16] * 6 + [7]
        for it in flat(batches):
            assert it.text in captions[it.image] and it.lang == "tr"


def test_images_without_captions_and_a_last_batch_of_one():
    captions = caption_lists(9)
    captions[4] = []
    batches = epoch_batches(captions, "tr", batch_size=4, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4]  # 8 captioned images; no trailing batch of one
    assert 4 not in {it.image for it in flat(batches)}
    batches = epoch_batches(caption_lists(9), "tr", batch_size=4, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4]  # 9 images: the 9th alone would be a batch of one


def test_deterministic_per_seed_and_epoch():
    captions = caption_lists(50)
    a = epoch_batches(captions, "tr", 8, seed=1, epoch=2)
    assert a == epoch_batches(captions, "tr", 8, seed=1, epoch=2)
    assert a != epoch_batches(captions, "tr", 8, seed=1, epoch=3)
    assert a != epoch_batches(captions, "tr", 8, seed=2, epoch=2)
    orders = {tuple(it.image for it in flat(epoch_batches(captions, "tr", 8, seed=1, epoch=e))) for e in range(5)}
    assert len(orders) == 5


def test_caption_choice_varies_across_epochs():
    captions = caption_lists(40, per_image=4)
    chosen = Counter(it.text.split()[-1] for e in range(10) for it in flat(epoch_batches(captions, "tr", 8, 0, e)))
    assert set(chosen) == {"0", "1", "2", "3"}  # every caption index gets used


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.7, 1.0])
def test_rehearsal_ratio(ratio):
    n = 2000
    captions = caption_lists(n, per_image=1)
    english = [[f"english {i}"] for i in range(n)]
    items = flat(epoch_batches(captions, "tr", 32, seed=3, epoch=0, rehearsal=english, rehearsal_ratio=ratio))
    assert len(items) == n
    share = sum(it.lang == "en" for it in items) / n
    assert share == pytest.approx(ratio, abs=0.04)
    for it in items:
        assert it.text == (english[it.image][0] if it.lang == "en" else captions[it.image][0])


def test_rehearsal_falls_back_when_an_image_has_no_english():
    captions = caption_lists(20, per_image=1)
    english = [[] for _ in range(20)]
    items = flat(epoch_batches(captions, "tr", 4, seed=0, epoch=0, rehearsal=english, rehearsal_ratio=1.0))
    assert len(items) == 20 and all(it.lang == "tr" for it in items)
