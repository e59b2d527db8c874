"""The metrics log (JSON lines) and the PNG of its curves."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per line to `path`; `kind` is "train" (per log interval) or "val" (per epoch)."""

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True):
        """`enabled=False` (every process but the main one when training in several) writes nothing."""
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if resume_step is None:
            path.write_text("")
        elif path.exists():  # drop what the interrupted run logged after its last checkpoint
            keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in keep))

    def write(self, **record) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


OBJECTIVE_TITLES = {"contrastive": "Contrastive loss", "distill": "Distillation loss",
                    "mix": "Contrastive + distillation loss"}


def plot_curves(runs: dict[str, list[dict]], png: Path, objective: str = "contrastive") -> None:
    """Training loss (left) and validation recall (right) of one or more runs, on shared axes. Short runs (a few
    logged points) are drawn with markers, so a one-point curve still shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for label, records in runs.items():
        prefix = f"{label}: " if len(runs) > 1 else ""  # one run: its validation curves need no run name
        train = [r for r in records if r["kind"] == "train"]
        val = [r for r in records if r["kind"] == "val"]
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=label,
                     marker="o" if len(train) <= 20 else None)
        if val:
            ax_val.plot([r["epoch"] for r in val], [r["text_to_image"]["R@1"] for r in val], marker="o",
                        label=f"{prefix}text→image R@1")
            ax_val.plot([r["epoch"] for r in val], [r["mean_recall"] for r in val], marker="s", linestyle="--",
                        label=f"{prefix}mean recall")
    ax_loss.set(xlabel="optimizer step", ylabel="training loss", title=OBJECTIVE_TITLES.get(objective, objective))
    ax_val.set(xlabel="epoch", ylabel="%", title="Validation retrieval")
    ax_val.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
