"""--head-init lstsq: the closed-form least-squares projection head, accumulated batch by batch."""

import pytest
import torch

from turkclip.roads.head_init import LeastSquares, least_squares_head

CAPTIONS = ["kırmızı bir araba", "sahilde koşan iki köpek", "a red car", "two dogs running on the beach",
            "karda oynayan çocuklar", "children playing in the snow", "mavi bir kapı", "a blue door"]


def test_recovers_a_known_linear_map_from_batches():
    torch.manual_seed(0)
    x = torch.randn(500, 16) * 3 + 1  # features with an offset and a scale
    weight, bias = torch.randn(8, 16), torch.randn(8)
    y = x @ weight.T + bias + 1e-4 * torch.randn(500, 8)
    fit = LeastSquares(16, 8)
    for start in range(0, 500, 37):  # uneven batches: only the sums matter
        fit.add(x[start : start + 37], y[start : start + 37])
    w, b = fit.solve(ridge=1e-9)
    assert fit.rows == 500
    assert torch.allclose(w, weight, atol=1e-3) and torch.allclose(b, bias, atol=1e-3)


def test_ridge_keeps_an_underdetermined_fit_finite_and_shrinks_it():
    torch.manual_seed(0)
    x, y = torch.randn(5, 32), torch.randn(5, 4)  # fewer rows than features: XᵀX is singular
    fit = LeastSquares(32, 4)
    fit.add(x, y)
    small, _ = fit.solve(ridge=1e-3)
    large, _ = fit.solve(ridge=10.0)
    assert torch.isfinite(small).all() and large.norm() < small.norm()
    with pytest.raises(ValueError, match="no rows"):
        LeastSquares(3, 2).solve()


def test_least_squares_head_makes_the_tower_reproduce_a_linear_target(tiny_encoder):
    from turkclip.roads.text_tower import new_text_tower

    tower = new_text_tower(str(tiny_encoder), 6)
    tower.prepare_training("lora")  # LoRA starts as the identity: the fit sees the encoder as it is
    tokens = tower.tokenize(CAPTIONS)
    with torch.no_grad():
        pooled = tower.eval().pooled(**tokens)
    torch.manual_seed(1)
    targets = pooled @ torch.randn(pooled.shape[1], 6) + 0.5  # a map the head can represent exactly
    before = (tower(**tokens) - targets).abs().max()
    rows = least_squares_head(tower.dense, lambda texts: tower.pooled(**tower.tokenize(texts)), CAPTIONS, targets,
                              batch_size=3, ridge=1e-9)
    with torch.no_grad():
        after = (tower.eval()(**tokens) - targets).abs().max()
    assert rows == len(CAPTIONS)
    assert after < 1e-3 < before
