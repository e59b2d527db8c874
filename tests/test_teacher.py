"""Distillation targets (`Teacher.targets`): what each training item is pulled towards, and the teacher cache key."""

import pytest
import torch
import torch.nn.functional as F

from turkclip.data.flip_caption import flip_caption
from turkclip.data.sampling import Item
from turkclip.embedding.embed import embed_texts
from turkclip.roads import load_clip
from turkclip.roads.teacher import build_teacher, teacher_key

CPU = torch.device("cpu")
ENGLISH = [["a red dog on the left", "a dog sitting on the left side"], ["a cat in the middle"], []]


@pytest.fixture(scope="module")
def clip(tiny_model):
    return load_clip(str(tiny_model))


def teacher_of(clip, texts: list[str]) -> torch.Tensor:
    """The base's own text tower on `texts`, normalised: what every target must be made of."""
    return F.normalize(embed_texts(clip.model.eval(), clip.text, texts, "en", CPU), dim=-1)


def mean_direction(vectors: torch.Tensor) -> torch.Tensor:
    return F.normalize(vectors.mean(0), dim=-1)


def test_unflipped_items_target_their_caption_or_the_image_mean(clip):
    teacher = build_teacher(clip, ENGLISH, "en", CPU, "fp32", None)
    items = [Item(0, "a dog sitting on the left side", "en"), Item(0, "solda kırmızı bir köpek", "tr"),
             Item(2, "bir şey", "tr")]
    targets, has = teacher.targets(items, CPU)
    assert torch.allclose(targets[0], teacher_of(clip, [ENGLISH[0][1]])[0], atol=1e-5)
    assert torch.allclose(targets[1], mean_direction(teacher_of(clip, ENGLISH[0])), atol=1e-5)
    assert has.tolist() == [True, True, False]  # image 2 has no English caption: no target, not a zero one


def test_a_mirrored_turkish_item_targets_the_mirrored_english_captions(clip):
    """"solda" mirrored is "sağda": its target is the teacher on "... on the right", never on "... on the left"."""
    teacher = build_teacher(clip, ENGLISH, "en", CPU, "fp32", None, flip=True)
    item = Item(0, flip_caption("solda kırmızı bir köpek", "tr"), "tr", flip=True)
    target, has = teacher.targets([item], CPU)
    mirrored = [flip_caption(c, "en") for c in ENGLISH[0]]
    assert mirrored == ["a red dog on the right", "a dog sitting on the right side"]
    assert has.tolist() == [True]
    assert torch.allclose(target[0], mean_direction(teacher_of(clip, mirrored)), atol=1e-5)
    assert not torch.allclose(target[0], mean_direction(teacher_of(clip, ENGLISH[0])), atol=1e-3)


def test_a_mirrored_english_item_targets_its_own_mirrored_caption(clip):
    teacher = build_teacher(clip, ENGLISH, "en", CPU, "fp32", None, flip=True)
    item = Item(0, "a red dog on the right", "en", flip=True)  # what sampling makes of the first caption
    target, _ = teacher.targets([item], CPU)
    assert torch.allclose(target[0], teacher_of(clip, ["a red dog on the right"])[0], atol=1e-5)


def test_a_caption_that_names_no_side_keeps_its_target_when_mirrored(clip):
    teacher = build_teacher(clip, ENGLISH, "en", CPU, "fp32", None, flip=True)
    target, has = teacher.targets([Item(1, "ortada bir kedi", "tr", flip=True)], CPU)
    assert has.tolist() == [True]
    assert torch.allclose(target[0], teacher_of(clip, ENGLISH[1])[0], atol=1e-5)


def test_english_captions_that_cannot_be_mirrored_safely_are_left_out_of_the_mirrored_mean(clip):
    unsafe = [["a dog looking right at the camera", "a dog on the left"]]  # "looking right at": side or "directly"?
    teacher = build_teacher(clip, unsafe, "en", CPU, "fp32", None, flip=True)
    target, has = teacher.targets([Item(0, "sağda bir köpek", "tr", flip=True)], CPU)
    assert has.tolist() == [True]
    assert torch.allclose(target[0], teacher_of(clip, ["a dog on the right"])[0], atol=1e-5)
    only_unsafe = build_teacher(clip, [["a dog looking right at the camera"]], "en", CPU, "fp32", None, flip=True)
    _, has = only_unsafe.targets([Item(0, "sağda bir köpek", "tr", flip=True)], CPU)
    assert has.tolist() == [False]  # no true mirrored target: the item is not distilled


def test_a_teacher_built_without_flips_refuses_a_mirrored_item(clip):
    teacher = build_teacher(clip, ENGLISH, "en", CPU, "fp32", None)
    with pytest.raises(ValueError, match="mirrored"):
        teacher.targets([Item(0, "sağda bir köpek", "tr", flip=True)], CPU)


def test_teacher_key_changes_with_tokenizer_library_versions_and_config(clip, monkeypatch):
    import transformers

    texts = ["a red dog on the left", "a cat"]
    key = teacher_key(clip, texts, "en", "fp32")
    assert teacher_key(clip, texts, "en", "fp32") == key
    assert teacher_key(clip, texts, "en", "bf16") != key
    clip.text.max_length, old = 3, clip.text.max_length  # the tokenizer cuts captions elsewhere: other ids
    try:
        assert teacher_key(clip, texts, "en", "fp32") != key
    finally:
        clip.text.max_length = old
    monkeypatch.setattr(transformers, "__version__", "0.0.0")
    assert teacher_key(clip, texts, "en", "fp32") != key
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert teacher_key(clip, texts, "en", "fp32") != key
    monkeypatch.undo()
    monkeypatch.setattr(clip.model.config.text_config, "hidden_act", "gelu")
    assert teacher_key(clip, texts, "en", "fp32") != key


def test_teacher_embeddings_are_cached_and_a_hit_gives_the_same_targets(clip, tmp_path, monkeypatch):
    import turkclip.roads.teacher as teacher_module

    first = build_teacher(clip, ENGLISH, "en", CPU, "fp32", tmp_path, flip=True)
    assert len(list(tmp_path.glob("teacher-*.safetensors"))) == 1
    monkeypatch.setattr(teacher_module, "embed_texts", lambda *a, **k: pytest.fail("cache missed"))
    second = build_teacher(clip, ENGLISH, "en", CPU, "fp32", tmp_path, flip=True)
    items = [Item(0, "sağda kırmızı bir köpek", "tr", flip=True), Item(1, "a cat in the middle", "en")]
    assert torch.equal(first.targets(items, CPU)[0], second.targets(items, CPU)[0])


def test_a_training_run_with_flips_distils_mirrored_items_towards_mirrored_targets(tiny_model, tmp_path, monkeypatch,
                                                                                    one_thread):
    """Through train(): every mirrored item that reaches the loss has the mirrored English target."""
    from conftest import write_captioned_images
    from turkclip.roads.settings import LoraSettings
    from turkclip.roads.teacher import Teacher
    from turkclip_train.config import TrainConfig
    from turkclip_train.train import train

    captions, images = write_captioned_images(tmp_path, 8, lambda i: [f"solda {i} kırmızı köpek"])
    english = tmp_path / "en.csv"
    english.write_text("image,caption\n" + "".join(f"{i:02d}.jpg,{i} red dogs on the left\n" for i in range(8)))
    seen = []
    real = Teacher.targets

    def recording(self, items, device):
        targets, has = real(self, items, device)
        seen.extend((it, t) for it, t, h in zip(items, targets, has) if h)
        return targets, has

    monkeypatch.setattr(Teacher, "targets", recording)
    train(TrainConfig(captions=str(captions), images=str(images), output=str(tmp_path / "out"), model=str(tiny_model),
                      rehearsal_captions=str(english), objective="mix", augment="flip", epochs=2, batch_size=4,
                      lora=LoraSettings(r=2, alpha=2, towers="text"), precision="fp32", progress=False,
                      cache_dir=str(tmp_path / "cache")))
    mirrored = [(it, t) for it, t in seen if it.flip]
    assert mirrored and len(mirrored) < len(seen)  # the coin came up for some items, not all
    clip = load_clip(str(tiny_model))
    for item, target in mirrored:
        assert "sağda" in item.text
        want = teacher_of(clip, [f"{item.image} red dogs on the right"])[0]
        assert torch.allclose(target, want, atol=1e-5)
