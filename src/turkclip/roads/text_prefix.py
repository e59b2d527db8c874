"""The text side of a training step when only the top layers of CLIP's text tower train.

With LoRA only in the top N text layers (`--lora-layers N`) and nothing below them training (no
token-embedding rows), the hidden states that leave the frozen lower layers are a function of the
caption alone. `PrefixText` computes them once per distinct caption (no grad, the lower layers in
eval mode, the run's precision), keeps them on disk (`prefix_store`, float32: the residual stream's
precision under autocast too, so the path stays equal to the whole tower in bf16 as in fp32), reads
a batch's back per step, and a step runs only the top N layers, the
final LayerNorm, the end-of-text pooling and the projection. With N = all layers the "prefix" is
the token + position embeddings: what is saved is the tokenizing.

Why it is exact: CLIP's text tower is causal, so a caption's states at its own positions never depend
on what follows them; they are stored unpadded and padded (with zeros) per length bucket, with the same
causal + padding mask the full forward uses. Pooling reads one position (transformers 5's rule: the
first end-of-text token, or the highest id for configs with the old `eos_token_id == 2`), so every
position after it is dropped and the last layer is computed at that position only (its keys and values
still come from every position before it). tests/test_text_prefix.py compares with the full forward.

`FullText` is the ordinary path (tokenize each batch, the whole tower per step), used without
`--lora-layers` (at every layer the remembered prefix was not measurably faster: bench/RESULTS.md) and
whenever a prefix could change during training (trained token rows, a swapped-in text tower). Both answer the
same two calls: `inputs(items, device)` outside the model, `features(model, **inputs)` inside it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers.masking_utils import create_causal_mask

from turkclip import cache
from turkclip.embedding.embed import autocast, text_features
from turkclip.roads.prefix_store import PrefixStore, open_prefixes, write_prefixes


class FullText:
    """Tokenize each batch; the whole text tower runs every step (length-bucketed, `embed.text_features`)."""

    def __init__(self, text):
        self.text = text  # a turkclip.models.text.TextEncoder (or a swapped tower's tokenizer)

    def inputs(self, items, device: torch.device) -> dict:
        tokens = self.text([it.text for it in items], [it.lang for it in items])
        return {k: v.to(device) for k, v in tokens.items()}

    def features(self, model, input_ids, attention_mask) -> torch.Tensor:
        return text_features(model, input_ids, attention_mask)


class PrefixText:
    """Frozen lower layers once per caption; the top `top` layers (where LoRA is) every step."""

    def __init__(self, model, text, top: int, device: torch.device, precision: str, buckets: int = 4,
                 batch_size: int = 256):
        self.text, self.device, self.precision = text, device, precision
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.text_model = base.text_model
        self.lower = base.text_model.encoder.layers[: len(base.text_model.encoder.layers) - top]
        self.buckets, self.batch_size = buckets, batch_size
        self.stores: list[PrefixStore] = []  # the remembered prefixes, on disk
        self.where: dict[tuple[str, str], tuple[int, int]] = {}  # (text, lang) → (store, caption in it)
        self.memo: dict[tuple[str, str], tuple[torch.Tensor, int]] = {}  # captions first met in a step (few)

    # --- outside the model: look the prefixes up (computing any new caption's once) and bucket them ---------

    def remember(self, texts: list[str], lang: str, cache_dir: Path | None = None) -> None:
        """Compute the prefixes of `texts` now (e.g. every train caption, before the first step) into a store on disk,
        read back per batch. With `cache_dir` the store is a cache entry, keyed by the frozen layers' weights and
        config, the token ids and the precision: a second run with the same captions skips the pass. Captions are
        sorted by (length, text), so the key is the same in every process, whatever the order of `texts`."""
        todo = sorted({t for t in texts if (t, lang) not in self.where}, key=lambda t: (len(t), t))
        if not todo:
            return
        key = self._cache_key(todo, lang) if cache_dir is not None else "run"
        store = open_prefixes(cache_dir, key)
        if store is None:
            chunks = (todo[start : start + self.batch_size] for start in range(0, len(todo), self.batch_size))
            store = write_prefixes(cache_dir, key, (state for chunk in chunks for state in self._compute(chunk, lang)))
        self.stores.append(store)
        self.where.update({(t, lang): (len(self.stores) - 1, i) for i, t in enumerate(todo)})

    def _cache_key(self, texts: list[str], lang: str) -> str:
        config = {k: v for k, v in self.text_model.config.to_dict().items()
                  if k not in ("_name_or_path", "transformers_version")}
        frozen = {**{f"embeddings.{k}": v for k, v in self.text_model.embeddings.state_dict().items()},
                  **{f"lower.{k}": v for k, v in self.lower.state_dict().items()}}
        ids = hashlib.blake2b(digest_size=16)  # the tokenizer and its folding, as the pass sees them, a chunk at a time
        for start in range(0, len(texts), self.batch_size):
            ids.update(self.text(texts[start : start + self.batch_size], lang)["input_ids"].numpy().tobytes())
        return cache.make_key("text-prefix-v2", cache.tensors_fingerprint(frozen), config, len(self.lower),
                              self.precision, ids.hexdigest(), torch.__version__)

    def state(self, text: str, lang: str) -> tuple[torch.Tensor, int]:
        """A remembered caption's prefix, read from its store, or one first met in a step, from memory."""
        if (text, lang) in self.where:
            store, i = self.where[(text, lang)]
            return self.stores[store].read(i)
        return self.memo[(text, lang)]

    def inputs(self, items, device: torch.device) -> dict:
        for lang in {it.lang for it in items}:  # captions no pass has seen (mirrored ones, --augment flip)
            new = sorted({it.text for it in items if it.lang == lang and (it.text, lang) not in self.where
                          and (it.text, lang) not in self.memo})
            self.memo.update({(t, lang): state for t, state in zip(new, self._compute(new, lang) if new else [])})
        states = [self.state(it.text, it.lang) for it in items]
        lengths = torch.tensor([s.shape[0] for s, _ in states])
        order = lengths.argsort()
        groups = []
        for idx in order.chunk(max(1, min(self.buckets, len(order)))):
            idx = idx.tolist()
            hidden = torch.nn.utils.rnn.pad_sequence([states[i][0] for i in idx], batch_first=True)
            groups.append((hidden.to(device, torch.float32), lengths[idx].to(device)))
        return {"groups": groups, "order": order.argsort().to(device)}

    @torch.no_grad()
    def _compute(self, texts: list[str], lang: str) -> list[tuple[torch.Tensor, int]]:
        text_model = self.text_model
        tokens = self.text(texts, lang)
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        pool = pool_positions(ids, text_model.config.eos_token_id)
        was_training = self.lower.training
        self.lower.eval()  # no dropout in the remembered states
        try:
            with autocast(self.device, self.precision):
                hidden = text_model.embeddings(input_ids=ids)
                hidden = run_layers(self.lower, hidden, mask, text_model.config)
        finally:
            self.lower.train(was_training)
        # Everything after the pooled position is never read: keep positions 0..pool only, compactly. In float32
        # whatever the precision: under bf16 autocast the whole tower's residual stream stays float32, and a
        # prefix rounded to bf16 would make the top layers see other inputs than the whole tower gives them.
        return [(h[: int(p) + 1].to("cpu", torch.float32).clone(), int(p)) for h, p in zip(hidden, pool)]

    # --- inside the model: the top layers on the remembered states -------------------------------------------

    def features(self, model, groups, order) -> torch.Tensor:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        text_model = base.text_model
        top = text_model.encoder.layers[len(self.lower):]
        parts = []
        for hidden, lengths in groups:
            mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
            hidden = run_layers(top[:-1], hidden, mask.long(), text_model.config)
            pooled = last_layer_at(top[-1], hidden, lengths - 1)
            parts.append(base.text_projection(text_model.final_layer_norm(pooled)))
        return torch.cat(parts)[order]


def pool_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """The position CLIPTextTransformer pools at (transformers 5.23): the first `eos_token_id`, or, for configs
    that still say `eos_token_id == 2`, the highest token id."""
    if eos_token_id == 2:
        return input_ids.to(torch.int).argmax(dim=-1)
    return (input_ids.to(torch.int) == eos_token_id).int().argmax(dim=-1)


def run_layers(layers, hidden: torch.Tensor, attention_mask: torch.Tensor, config) -> torch.Tensor:
    """`layers` as CLIPEncoder runs them: the causal + padding mask that CLIPTextTransformer builds."""
    if len(layers) == 0:
        return hidden
    mask = create_causal_mask(config=config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=None)
    for layer in layers:
        hidden = layer(hidden, mask, is_causal=True)
    return hidden


def last_layer_at(layer, hidden: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """A CLIPEncoderLayer's output at position `pool[i]` of each row only [B, D]: the query, the attention
    output and the MLP at that position; keys and values from positions 0..pool[i]."""
    attn = layer.self_attn
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    b, t, d = hidden.shape
    x = layer.layer_norm1(hidden)
    q = attn.q_proj(x[rows, pool]).view(b, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
    keep = (torch.arange(t, device=hidden.device)[None, :] <= pool[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=keep, scale=attn.scale,
                                         dropout_p=attn.dropout if attn.training else 0.0)
    h = hidden[rows, pool] + attn.out_proj(out.transpose(1, 2).reshape(b, d))
    return h + layer.mlp(layer.layer_norm2(h))
