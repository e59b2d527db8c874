"""The demo's example grid: a few test scenes with the Turkish caption the model ranks first, before and after."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Example:
    pixels: torch.Tensor  # uint8 [3, S, S]
    truth: str  # one of the scene's own Turkish captions
    before: tuple[str, bool]  # (top caption of the whole test set, is it this scene's own?)
    after: tuple[str, bool]


def plot_examples(examples: list[Example], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 2, figsize=(11, 1.7 * len(examples)),
                             gridspec_kw={"width_ratios": [1, 6]}, squeeze=False)
    for (ax_image, ax_text), ex in zip(axes, examples):
        ax_image.imshow(ex.pixels.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax_image.axis("off")
        ax_text.axis("off")
        lines = [("scene", ex.truth, "black")] + [
            (label, caption, "green" if ok else "red") for label, (caption, ok) in (("before", ex.before),
                                                                                    ("after", ex.after))]
        for row, (label, caption, colour) in enumerate(lines):
            text = textwrap.shorten(caption, 110, placeholder=" …")
            mark = {"green": " ✓", "red": " ✗"}.get(colour, "")
            ax_text.text(0, 0.85 - 0.33 * row, f"{label}:{mark} {text}", color=colour, fontsize=8.5,
                         transform=ax_text.transAxes, va="center")
    fig.suptitle("Held-out test scenes: the Turkish test caption ranked first, before and after the adapter",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
