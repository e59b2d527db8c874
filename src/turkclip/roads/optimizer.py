"""CLIP's optimizer rules: which weights get weight decay, and the cap on the logit scale.

As in OpenAI's and OpenCLIP's training: weight decay applies to matrices only, never to biases,
LayerNorm gains or the logit scale (decaying those pulls them toward zero for no benefit: a bias
or gain of 0 is no simpler a model); and the learnt temperature is capped at 100 — `logit_scale`
(its log) is clamped to ln 100 after every step, without which it can grow until training is unstable.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

MAX_LOGIT_SCALE = math.log(100)


def param_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float,
                 lr: float | None = None) -> list[dict]:
    """AdamW parameter groups of the trainable weights: decay for matrices, none for 0-/1-d tensors; `lr`, if
    given, is the groups' own peak learning rate (a road trains parts at different rates).

    Empty groups are left out, so a LoRA run (only matrices) keeps one group, as before."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


@torch.no_grad()
def clamp_logit_scale(model: torch.nn.Module) -> None:
    """Cap a trained `logit_scale` at ln 100 (a frozen one is the base model's, and left as it is)."""
    scale = getattr(model, "logit_scale", None)
    if scale is not None and scale.requires_grad:
        scale.clamp_(max=MAX_LOGIT_SCALE)
