"""The text side of a training step when only the top layers of a text tower's encoder train.

The text-tower road's cost is the encoder: e5-small is ~25× the work per token of the demo's own
CLIP text tower, and a step runs it forward and backward over every caption. When only the top N
encoder layers train (`--text-layers N`: LoRA in them with `--text-train lora`, every weight of them
with `full`), the hidden states that leave the frozen embeddings and lower layers are a function of the
sentence alone. `TowerPrefix` computes them once per distinct sentence (no grad, eval mode, the run's
precision), keeps them in memory (~21 KB per 28-token sentence in bf16), and a step runs only the top
N layers, the mean pooling and the projection.

Why it is exact: the encoder is bidirectional, but padding is masked out of attention, so a sentence's
states do not depend on the batch it was computed in; they are stored unpadded and padded again per
batch with the same padding mask the full forward builds. tests/test_tower_prefix.py compares with
the full forward. BERT-family encoders only (BERT, e5, RoBERTa, XLM-R, ELECTRA, CamemBERT: an
`embeddings` module and `encoder.layer` blocks); others are refused with one line.
"""

from __future__ import annotations

import torch
from transformers.masking_utils import create_bidirectional_mask

from turkclip.embedding.embed import autocast, eval_mode
from turkclip.roads.text_tower import check_layers, encoder_layers, mean_pool

STORE_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}  # fp32 runs keep the prefix in fp32


class TowerPrefix:
    """Frozen embeddings and lower layers once per sentence; the top `top` layers, pooling and projection every step."""

    def __init__(self, tower, top: int, device: torch.device, precision: str, batch_size: int = 256, group: int = 8):
        check_layers(tower.encoder, top)
        self.tower, self.device, self.precision, self.batch_size = tower, device, precision, batch_size
        self.group = group  # sentences per length group in the top layers (see `pooled`)
        base = tower.encoder.get_base_model() if hasattr(tower.encoder, "get_base_model") else tower.encoder
        layers = encoder_layers(base)
        self.embeddings, self.lower, self.upper = base.embeddings, layers[: len(layers) - top], layers[len(layers) - top :]
        self.config = base.config
        self.memo: dict[str, torch.Tensor] = {}  # sentence → its states after the lower layers [tokens, D]

    # --- outside the model: look the prefixes up (computing any new sentence's once) and pad them ----------------

    def remember(self, texts: list[str]) -> None:
        """Compute and keep the prefixes of `texts` that are not known yet, in batches of similar length."""
        todo = sorted({t for t in texts if t not in self.memo}, key=len)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            self.memo.update(zip(chunk, self._compute(chunk)))

    def memory_mb(self) -> float:
        return sum(s.numel() * s.element_size() for s in self.memo.values()) / 2**20

    def inputs(self, items, device: torch.device) -> dict:
        """The padded prefixes of the items' sentences (the tower has no language-specific folding)."""
        return self.padded([it.text for it in items], device)

    def padded(self, texts: list[str], device: torch.device) -> dict:
        self.remember(texts)
        states = [self.memo[t] for t in texts]
        lengths = torch.tensor([len(s) for s in states])
        hidden = torch.nn.utils.rnn.pad_sequence(states, batch_first=True).to(device, torch.float32)
        mask = (torch.arange(hidden.shape[1])[None, :] < lengths[:, None]).long().to(device)
        return {"hidden": hidden, "attention_mask": mask}

    @torch.no_grad()
    def _compute(self, texts: list[str]) -> list[torch.Tensor]:
        tokens = {k: v.to(self.device) for k, v in self.tower.tokenize(texts).items()}
        with eval_mode(self.tower.encoder), autocast(self.device, self.precision):  # no dropout in remembered states
            hidden = self._run(self.lower, self.embeddings(input_ids=tokens["input_ids"]), tokens["attention_mask"])
        store = STORE_DTYPE.get(self.precision, torch.float32)
        return [h[: int(n)].to("cpu", store).clone() for h, n in zip(hidden, tokens["attention_mask"].sum(1))]

    # --- inside the model: the top layers on the remembered states -------------------------------------------------

    def pooled(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's mean-pooled output, from the remembered states (what `TextTower.pooled` gives).

        The rows run in groups of similar length, each padded only to its own longest sentence: a random batch pads
        to its longest, ~1.5x the mean in the demo's captions, and a sentence's output does not depend on its batch.
        """
        lengths = attention_mask.sum(1)
        order = torch.argsort(lengths, stable=True)
        parts = []
        for rows in order.split(self.group):
            n = int(lengths[rows].max())
            h, m = hidden[rows, :n], attention_mask[rows, :n]
            parts.append(mean_pool(self._run(self.upper, h, m), m))
        return torch.cat(parts)[torch.argsort(order)]  # back in the batch's order

    def features(self, model, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.tower.dense(self.pooled(hidden, attention_mask))

    def _run(self, layers, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`layers` as the encoder runs them: the padding mask BertModel builds (padding is never attended to)."""
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in layers:
            hidden = layer(hidden, mask)
        return hidden
