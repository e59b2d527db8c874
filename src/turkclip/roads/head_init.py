"""The text tower's projection head, started at the closed-form least-squares map (`--head-init lstsq`).

A new tower's projection is random, so its first steps spend the encoder's learning on undoing a
random map. The best linear map from the encoder's pooled features X to the teacher's embeddings Y
is known in closed form, W = (XᵀX + λI)⁻¹ XᵀY, and needs one pass of the frozen encoder: XᵀX and
XᵀY are summed batch by batch (d×d and d×D, however many sentences), then solved once. A bias
column of ones is appended to X (the bias is not shrunk); λ is `ridge` times the mean diagonal of
XᵀX, so the shrinkage does not depend on the features' scale, and keeps the solve well posed when
there are fewer sentences than feature dimensions or the features are collinear.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

DEFAULT_RIDGE = 1e-3


class LeastSquares:
    """Running sums of XᵀX and XᵀY (float64) for the ridge least-squares map X → Y with a bias."""

    def __init__(self, in_features: int, out_features: int):
        self.xtx = torch.zeros(in_features + 1, in_features + 1, dtype=torch.float64)
        self.xty = torch.zeros(in_features + 1, out_features, dtype=torch.float64)
        self.rows = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = torch.cat([x.detach().double().cpu(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
        self.xtx += x.T @ x
        self.xty += x.T @ y.detach().double().cpu()
        self.rows += len(x)

    def solve(self, ridge: float = DEFAULT_RIDGE) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [out, in], bias [out]) minimising ‖XWᵀ + b − Y‖² + λ‖W‖²."""
        if self.rows == 0:
            raise ValueError("no rows were added")
        d = self.xtx.shape[0] - 1
        penalty = torch.zeros(d + 1, dtype=torch.float64)
        penalty[:d] = ridge * self.xtx.diagonal()[:d].mean().clamp(min=1e-12)
        solution = torch.linalg.solve(self.xtx + torch.diag(penalty), self.xty)  # [in + 1, out]
        return solution[:d].T.float(), solution[d].float()


@torch.no_grad()
def least_squares_head(dense: torch.nn.Linear, pooled: Callable[[list[str]], torch.Tensor], texts: list[str],
                       targets: torch.Tensor, batch_size: int = 256, ridge: float = DEFAULT_RIDGE) -> int:
    """Set the projection `dense` to the least-squares map from `pooled(batch of texts)` (the encoder's pooled
    features, as the tower computes them: whole, or on remembered lower layers) to `targets` (one row per text: the
    teacher's normalised embeddings). Returns the number of rows fitted."""
    fit = LeastSquares(dense.in_features, dense.out_features)
    # Shortest first: a batch is padded to its longest sentence, and the sums do not care about order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        fit.add(pooled([texts[i] for i in rows]).float(), targets[rows])
    weight, bias = fit.solve(ridge)
    dense.weight.copy_(weight.to(dense.weight))
    dense.bias.copy_(bias.to(dense.bias))
    return fit.rows
