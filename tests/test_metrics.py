"""Retrieval metrics against a brute-force reference; the contrastive losses against written-out formulas."""

import math
import statistics

import pytest
import torch

from turkclip.evaluation import metrics
from turkclip.evaluation.metrics import legacy_in_batch_top1, retrieval_metrics
from turkclip.roads.loss import bank_loss, clip_loss

# --- brute-force reference: loops and sorting, no tensor tricks -------------------------------------------


def pessimistic_rank(scores: list[float], correct: set[int]) -> int:
    """1-based rank of the best-scored correct item, counting every other item scoring >= it as above it."""
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    best = max(scores[k] for k in correct)
    above = [k for k in order if scores[k] >= best]  # ties with the correct item count against it
    return len(above) - (len([k for k in above if k in correct and scores[k] == best]) - 1)


def reference(sim: list[list[float]], owner: list[int]) -> dict:
    n_texts, n_images = len(sim), len(sim[0])
    t2i = [pessimistic_rank(sim[t], {owner[t]}) for t in range(n_texts)]
    i2t = []
    for i in range(n_images):
        own = {t for t in range(n_texts) if owner[t] == i}
        if own:  # an image without captions is no query
            i2t.append(pessimistic_rank([sim[t][i] for t in range(n_texts)], own))

    def summary(ranks):
        return {"R@1": 100 * sum(r <= 1 for r in ranks) / len(ranks), "R@5": 100 * sum(r <= 5 for r in ranks) / len(ranks),
                "R@10": 100 * sum(r <= 10 for r in ranks) / len(ranks), "mean_rank": sum(ranks) / len(ranks),
                "median_rank": math.floor(statistics.median(ranks))}  # an integer rank, rounded down

    return {"text_to_image": summary(t2i), "image_to_text": summary(i2t), "n_images": n_images, "n_texts": n_texts}


def metrics_of(sim: torch.Tensor, owner: list[int]) -> dict:
    """Run the real code on a given similarity matrix: text_emb = sim, image_emb = identity."""
    n_images = sim.shape[1]
    return retrieval_metrics(sim, torch.eye(n_images), torch.tensor(owner))


def assert_same(ours: dict, ref: dict) -> None:
    assert ours["n_images"] == ref["n_images"] and ours["n_texts"] == ref["n_texts"]
    for direction in ("text_to_image", "image_to_text"):
        for key, value in ref[direction].items():
            assert ours[direction][key] == pytest.approx(value, abs=1e-9), (direction, key)


def test_reference_rank_helper():
    assert pessimistic_rank([0.1, 0.9, 0.5], {1}) == 1
    assert pessimistic_rank([0.5, 0.5, 0.5], {0}) == 3
    assert pessimistic_rank([0.9, 0.5, 0.5, 0.1], {1, 3}) == 3  # best own is 0.5, tied with item 2


# --- hand-built cases ----------------------------------------------------------------------------------


def test_perfect_model():
    sim = torch.eye(4)
    ours = metrics_of(sim, [0, 1, 2, 3])
    for direction in ("text_to_image", "image_to_text"):
        assert ours[direction] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "mean_rank": 1.0, "median_rank": 1.0}


def test_constant_scores_rank_last():
    n = 12
    sim = torch.full((n, n), 0.3)
    ours = metrics_of(sim, list(range(n)))
    assert ours["text_to_image"]["mean_rank"] == n and ours["text_to_image"]["R@10"] == 0.0
    assert ours["image_to_text"]["median_rank"] == n and ours["image_to_text"]["R@1"] == 0.0


def test_constant_scores_with_several_captions_per_image():
    # 4 images with 3 captions each: every other image's 9 captions tie above an image's own → rank 10.
    sim = torch.zeros(12, 4)
    ours = metrics_of(sim, [i // 3 for i in range(12)])
    assert ours["text_to_image"]["mean_rank"] == 4
    assert ours["image_to_text"]["mean_rank"] == 10 and ours["image_to_text"]["R@10"] == 100.0


def test_tie_with_correct_item_counts_against_it():
    # Caption 0: its image (0) ties with image 2 at the top → rank 2, not 1.
    # Caption 1: its image (1) is strictly best → rank 1.
    sim = torch.tensor([[0.8, 0.1, 0.8],
                        [0.2, 0.9, 0.3]])
    ours = metrics_of(sim, [0, 1])
    assert ours["text_to_image"]["R@1"] == 50.0 and ours["text_to_image"]["mean_rank"] == 1.5
    assert_same(ours, reference(sim.tolist(), [0, 1]))


def test_any_caption_counts_for_image_to_text():
    # Image 0 has captions 0 and 1; caption 1 is the best caption for image 0 even though caption 0 is not.
    sim = torch.tensor([[0.1, 0.9],   # caption 0 (image 0) prefers image 1
                        [0.8, 0.2],   # caption 1 (image 0)
                        [0.7, 0.6]])  # caption 2 (image 1)
    ours = metrics_of(sim, [0, 0, 1])
    assert ours["image_to_text"]["mean_rank"] == 1.5  # image 0 → rank 1 (caption 1); image 1 → rank 2
    assert ours["text_to_image"]["mean_rank"] == pytest.approx(5 / 3)  # ranks 2, 1, 2
    assert_same(ours, reference(sim.tolist(), [0, 0, 1]))


def test_tied_own_captions_do_not_push_each_other_down():
    sim = torch.tensor([[0.5, 0.1], [0.5, 0.2], [0.5, 0.9]])  # image 0: own captions 0 and 1 tie with caption 2
    ours = metrics_of(sim, [0, 0, 1])
    assert_same(ours, reference(sim.tolist(), [0, 0, 1]))
    assert ours["image_to_text"]["mean_rank"] == (2 + 1) / 2  # image 0: the tie with caption 2 counts once


def test_image_without_caption_is_gallery_only():
    # Image 2 has no caption: it is a distractor for text→image (it beats caption 0's image) but no query.
    sim = torch.tensor([[0.5, 0.1, 0.9],
                        [0.1, 0.7, 0.2]])
    ours = metrics_of(sim, [0, 1])
    assert ours["n_images"] == 3 and ours["n_texts"] == 2
    assert ours["text_to_image"]["mean_rank"] == 1.5  # caption 0 → rank 2 because of image 2
    assert ours["image_to_text"]["R@1"] == 100.0  # two queries (images 0 and 1), both rank 1
    assert_same(ours, reference(sim.tolist(), [0, 1]))


def test_median_of_an_even_number_of_ranks():
    sim = torch.tensor([[0.9, 0.1, 0.0, 0.0],  # rank 1
                        [0.9, 0.8, 0.0, 0.0],  # rank 2
                        [0.9, 0.9, 0.8, 0.0],  # rank 3
                        [0.9, 0.9, 0.9, 0.8]])  # rank 4
    ours = metrics_of(sim, [0, 1, 2, 3])
    # The usual integer convention (floor of the midpoint), not the interpolated 2.5.
    assert ours["text_to_image"]["median_rank"] == 2 and ours["text_to_image"]["mean_rank"] == 2.5


@pytest.mark.parametrize("seed", range(25))
def test_random_cases_match_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n_images = int(torch.randint(2, 25, (1,), generator=g))
    n_texts = int(torch.randint(1, 60, (1,), generator=g))
    owner = torch.randint(0, n_images, (n_texts,), generator=g).tolist()
    # Coarse integer scores make ties common, both with the correct item and among own captions.
    levels = int(torch.randint(2, 8, (1,), generator=g))
    sim = torch.randint(0, levels, (n_texts, n_images), generator=g).float()
    assert_same(metrics_of(sim, owner), reference(sim.tolist(), owner))


@pytest.mark.parametrize("seed", range(8))
def test_ranks_computed_in_small_blocks_match_reference(seed, monkeypatch):
    """Memory stays bounded because similarities are made a block of texts at a time: with blocks of one or
    a few texts (block edges inside one image's captions), the ranks are still the brute-force ones."""
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 1 + seed * 5)
    g = torch.Generator().manual_seed(100 + seed)
    n_images, n_texts = int(torch.randint(2, 12, (1,), generator=g)), int(torch.randint(1, 40, (1,), generator=g))
    owner = torch.randint(0, n_images, (n_texts,), generator=g).tolist()
    sim = torch.randint(0, 4, (n_texts, n_images), generator=g).float()
    assert_same(metrics_of(sim, owner), reference(sim.tolist(), owner))


def test_from_normalised_embeddings():
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=-1)
    image = torch.nn.functional.normalize(torch.randn(10, 8, generator=g), dim=-1)
    owner = torch.randint(0, 10, (30,), generator=g)
    ours = retrieval_metrics(text, image, owner)
    assert_same(ours, reference((text @ image.t()).tolist(), owner.tolist()))


# --- the seed notebook's in-batch number ---------------------------------------------------------------


def test_legacy_in_batch_top1_hand_case():
    # 5 pairs, batches of 2: [0, 1], [2, 3], [4]. Text t scores its own image's embedding via dot products.
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # batch 1: image 0 prefers text 0 ✓, image 1 prefers text 1 ✓
    # batch 2: image 2 ([0,1]) scores texts 2, 3 equally at 0 → argmax picks the first (text 2) ✓;
    #          image 3 ([1,0]) scores texts 2, 3 equally at 1 → text 2 ✗
    # batch 3: a single pair, always a hit ✓
    assert legacy_in_batch_top1(text, image, batch_size=2) == pytest.approx(4 / 5)
    # One batch of all five: images 0, 3 → text 0 (0 ✓, 3 ✗); images 1, 2, 4 → text 1 (1 ✓, 2 ✗, 4 ✗).
    assert legacy_in_batch_top1(text, image, batch_size=5) == pytest.approx(2 / 5)


# --- losses --------------------------------------------------------------------------------------------


def reference_clip_loss(text, image, logit_scale):
    text = text / text.norm(dim=-1, keepdim=True)
    image = image / image.norm(dim=-1, keepdim=True)
    logits = logit_scale.exp() * text @ image.t()
    n = len(logits)
    t2i = -sum(logits[i, i] - torch.log(torch.exp(logits[i]).sum()) for i in range(n)) / n
    i2t = -sum(logits[i, i] - torch.log(torch.exp(logits[:, i]).sum()) for i in range(n)) / n
    return (t2i + i2t) / 2, t2i, i2t


def embeddings(seed, n=6, d=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(3))
def test_clip_loss_matches_written_out_formula(seed):
    text, image = embeddings(seed)
    scale = torch.tensor(2.3, dtype=torch.float64)
    expected, _, _ = reference_clip_loss(text, image, scale)
    assert clip_loss(text, image, scale).item() == pytest.approx(expected.item(), rel=1e-10)


def test_clip_loss_is_symmetric_and_scale_invariant_in_norm():
    text, image = embeddings(7)
    scale = torch.tensor(1.5, dtype=torch.float64)
    assert clip_loss(text, image, scale).item() == pytest.approx(clip_loss(image, text, scale).item(), rel=1e-12)
    assert clip_loss(3 * text, 0.5 * image, scale).item() == pytest.approx(clip_loss(text, image, scale).item(), rel=1e-12)


def test_clip_loss_rewards_matching_pairs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, generator=g)
    scale = torch.tensor(3.0)
    assert clip_loss(x, x, scale) < clip_loss(x, x[torch.randperm(8, generator=g)], scale)


def test_bank_loss_equals_clip_loss_when_bank_is_the_batch():
    text, image = embeddings(3)
    scale = torch.tensor(2.0, dtype=torch.float64)
    _, t2i, i2t = reference_clip_loss(text, image, scale)
    idx = torch.arange(len(image))
    assert bank_loss(text, image, idx, scale).item() == pytest.approx(((t2i + i2t) / 2).item(), rel=1e-10)
    assert bank_loss(text, image, idx, scale).item() == pytest.approx(clip_loss(text, image, scale).item(), rel=1e-10)


def test_bank_loss_with_a_larger_bank():
    text, image = embeddings(4, n=4)
    extra = torch.randn(5, image.shape[1], generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    bank = torch.cat([extra[:2], image, extra[2:]])  # batch images sit at rows 2..5 of the bank
    idx = torch.arange(2, 6)
    scale = torch.tensor(1.0, dtype=torch.float64)
    t, b = text / text.norm(dim=-1, keepdim=True), bank / bank.norm(dim=-1, keepdim=True)
    logits = scale.exp() * t @ b.t()
    t2bank = -sum(logits[i, idx[i]] - torch.log(torch.exp(logits[i]).sum()) for i in range(4)) / 4
    _, _, i2t = reference_clip_loss(text, image, scale)
    assert bank_loss(text, bank, idx, scale).item() == pytest.approx(((t2bank + i2t) / 2).item(), rel=1e-10)
