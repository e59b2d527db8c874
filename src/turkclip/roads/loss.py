"""CLIP's contrastive loss (symmetric InfoNCE), in-batch or against a bank of images."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(text_emb: torch.Tensor, image_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Row i of `text_emb` belongs with row i of `image_emb`; every other row is a negative.

    Embeddings are projected but not yet normalised; `logit_scale` is CLIP's learnt log-temperature.
    """
    text_emb = F.normalize(text_emb, dim=-1)
    image_emb = F.normalize(image_emb, dim=-1)
    logits = logit_scale.exp() * text_emb @ image_emb.t()  # [texts, images]
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def bank_loss(
    text_emb: torch.Tensor, bank: torch.Tensor, image_idx: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Text→image scored against every image in `bank` (frozen, cached embeddings), image→text in batch.

    `image_idx[i]` is the bank row that text i describes. With a frozen image tower the whole
    train set's image embeddings are known, so each caption gets thousands of negatives for the
    price of one small matmul instead of the batch's 63.
    """
    text_emb = F.normalize(text_emb, dim=-1)
    bank = F.normalize(bank, dim=-1)
    scale = logit_scale.exp()
    text_to_bank = scale * text_emb @ bank.t()  # [texts, bank]
    in_batch = text_to_bank[:, image_idx]  # [texts, batch images]
    target = torch.arange(len(text_emb), device=text_emb.device)
    return (F.cross_entropy(text_to_bank, image_idx) + F.cross_entropy(in_batch.t(), target)) / 2


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared distance between L2-normalised student and teacher embeddings (multilingual distillation).

    On the unit sphere this is 2 - 2·cosine: it moves the new tower's caption vector onto the
    direction the base CLIP's text tower gives the English caption(s) — the only thing retrieval
    by cosine similarity sees.
    """
    return (F.normalize(student, dim=-1) - F.normalize(teacher, dim=-1)).pow(2).sum(-1).mean()
