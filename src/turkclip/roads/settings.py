"""Settings of the roads, as plain dataclasses: no torch, no PEFT at import (the CLI builds its flags from them).

Each field's `metadata["help"]` is the one description of that setting: `turkclip train --help` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from turkclip.errors import TurkclipError

TOWER_PATTERNS = {"text": "text_model", "vision": "vision_model", "both": "(text_model|vision_model)"}


@dataclass
class LoraSettings:
    """The seed recipe's defaults: r=16, alpha=16, q_proj+v_proj in both towers, dropout 0.1."""

    r: int = field(default=16, metadata={"help": "LoRA rank"})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)"})
    dropout: float = field(default=0.1, metadata={"help": "LoRA dropout (0 is ~1.25x faster per step)"})
    targets: tuple[str, ...] = field(default=("q_proj", "v_proj"), metadata={
        "help": "comma-separated module names that get LoRA", "metavar": "NAMES"})
    towers: str = field(default="both", metadata={
        "choices": ["text", "vision", "both"],
        "help": "towers that get LoRA. text: the image tower is frozen and its embeddings are computed once and"
                " cached, so training skips it entirely"})
    layers: int | None = field(default=None, metadata={
        "metavar": "N",
        "help": "with --lora-towers text: LoRA only in the top N layers of the text tower (default: every layer)."
                " Without --train-token-rows nothing below them trains, so their input is computed once per caption"
                " and a step runs only the top N layers: faster per pair (docs/training.md has the measured"
                " trade-off)"})
    token_ids: list[int] = field(default_factory=list, metadata={"flag": False})  # token-embedding rows to train too

    def peft_config(self, text_layers: int | None = None):
        """PEFT's `LoraConfig`; `text_layers` (the text tower's depth) is needed only with `layers`."""
        from peft import LoraConfig

        if self.towers not in TOWER_PATTERNS:
            raise TurkclipError(f"--lora-towers must be text, vision or both, not {self.towers!r}")
        targets = "|".join(self.targets)
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            # A regex, so LoRA lands only in the chosen tower(s) (and layers).
            target_modules=rf".*{TOWER_PATTERNS[self.towers]}\.encoder\.layers\.{self._layer_pattern(text_layers)}"
                           rf"\.\S*({targets})",
            trainable_token_indices={"token_embedding": sorted(self.token_ids)} if self.token_ids else None,
        )

    def _layer_pattern(self, text_layers: int | None) -> str:
        """`\\d+` (every layer) or the top `layers` indices of a `text_layers`-deep text tower, e.g. `(10|11)`."""
        if self.layers is None:
            return r"\d+"
        if self.towers != "text":
            raise TurkclipError("--lora-layers is for the text tower: it needs --lora-towers text")
        if text_layers is None:
            raise ValueError("peft_config needs the text tower's depth when `layers` is set")
        if not 1 <= self.layers <= text_layers:
            raise TurkclipError(f"--lora-layers must be between 1 and the text tower's {text_layers} layers,"
                                f" not {self.layers}")
        return "(" + "|".join(str(i) for i in range(text_layers - self.layers, text_layers)) + ")"


