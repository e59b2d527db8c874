"""The demo's example grid: a few test scenes with the Turkish caption the model ranks first, before and after."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

from turkclip_train.logs import pyplot


@dataclass
class Example:
    pixels: torch.Tensor  # uint8 [3, S, S]
    truth: str  # one of the scene's own Turkish captions
    ranked: dict[str, tuple[str, bool]]  # model label → (top caption of the whole test set, is it this scene's own?)


def plot_examples(examples: list[Example], png: Path) -> None:
    plt = pyplot(png)
    if plt is None:
        return
    rows = 1 + len(examples[0].ranked)
    fig, axes = plt.subplots(len(examples), 2, figsize=(11, 0.6 * rows * len(examples)),
                             gridspec_kw={"width_ratios": [1, 6]}, squeeze=False)
    for (ax_image, ax_text), ex in zip(axes, examples):
        ax_image.imshow(ex.pixels.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax_image.axis("off")
        ax_text.axis("off")
        lines = [("scene", ex.truth, "black")] + [
            (label, caption, "green" if ok else "red") for label, (caption, ok) in ex.ranked.items()]
        for row, (label, caption, colour) in enumerate(lines):
            text = textwrap.shorten(caption, 110, placeholder=" …")
            mark = {"green": " ✓", "red": " ✗"}.get(colour, "")
            ax_text.text(0, 0.9 - 0.8 * row / max(1, rows - 1), f"{label}:{mark} {text}", color=colour, fontsize=8.5,
                         transform=ax_text.transAxes, va="center")
    fig.suptitle("Held-out test scenes: the Turkish test caption ranked first, before and after stage 2",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_routes(routes: dict[str, dict], png: Path) -> None:
    """The two roads side by side: R@1 before stage 2 and after it by each road, per measurement."""
    plt = pyplot(png)
    if plt is None:
        return
    groups = [("Turkish\ntext→image", "turkish", "text_to_image"), ("Turkish\nimage→text", "turkish", "image_to_text"),
              ("Turkish, unseen\ncolour–shape pairs", "heldout_pairs", "text_to_image"),
              ("English\ntext→image", "english", "text_to_image"), ("English\nimage→text", "english", "image_to_text")]
    first = next(iter(routes.values()))
    bars = {"before": [first[s]["before"][d]["R@1"] for _, s, d in groups]}
    bars.update({label: [m[s]["after"][d]["R@1"] for _, s, d in groups] for label, m in routes.items()})
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(bars)
    for k, (label, values) in enumerate(bars.items()):
        xs = [g + (k - (len(bars) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=label)
        for x, v in zip(xs, values):
            ax.text(x, v + 1, f"{v:.0f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax.set_ylabel("R@1 (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("Two roads to Turkish: held-out test scenes", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
