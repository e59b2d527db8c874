"""`--lora-layers N` in the demo world: held-out R@1 of text-only stage 2 with LoRA in all / the top N layers.

Every run starts from the same cached stage-1 base (`turkclip demo`'s, for `--seed`) and trains the demo's
LoRA-road recipe (LoRA r=8 q,v on the text tower, 50% English captions, 4 epochs, lr 5e-3, batch 64, fp32)
through the product's `train()`, changing only what a run's spec says:

    rows        the demo's default: token-embedding rows of the Turkish-only pieces train too (`--train-token-rows
                new`), LoRA in every layer; the remembered-prefix path cannot be used (the rows sit below every layer)
    all         LoRA in every layer, no token rows (the prefix path: embeddings remembered)
    topN        LoRA in the top N text layers only, no token rows (the prefix path: N of the tower's layers per step)
    rows-topN   token rows + LoRA in the top N layers (the whole tower runs every step)

each followed by `:DROPOUT` (LoRA dropout, e.g. `all:0.1`, `top2:0`). The demo's text tower has 4 layers.

    .venv/bin/python bench/lora_layers_world.py --seed 0 --runs rows:0.1,all:0.1,all:0,top2:0.1,top2:0

Prints a markdown table (append it to bench/RESULTS.md by hand, with the machine and load).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from turkclip.roads import load_clip
from turkclip.roads.adapters import load_adapter
from turkclip.roads.settings import LoraSettings
from turkclip_train.config import TrainConfig
from turkclip_train.demo.pretrain import pretrain
from turkclip_train.demo.run import FULL, _compare
from turkclip_train.train import train


def run_one(base, recipe, spec: str, out: Path, seed: int) -> float:
    what, dropout = spec.split(":")
    rows = what.startswith("rows")
    top = what.rsplit("top", 1)[1] if "top" in what else None
    t0 = time.perf_counter()
    train(TrainConfig(
        captions=str(base.world.turkish), images=str(base.world.images), output=str(out), model=str(base.folder),
        lang="tr", epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
        lora=LoraSettings(r=recipe.lora_r, alpha=recipe.lora_r, towers="text", dropout=float(dropout),
                          layers=int(top) if top else None),
        train_token_rows="new" if rows else "none", rehearsal_captions=str(base.world.english),
        rehearsal_ratio=recipe.rehearsal_ratio, precision="fp32", seed=seed, progress=False))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="rows:0.1,all:0.1,all:0,top2:0.1,top2:0,top1:0.1")
    parser.add_argument("--out", default="/tmp/turkclip-lora-layers-world")
    args = parser.parse_args()
    stage1, recipe, _ = FULL
    base = pretrain(stage1, args.seed)
    lines = ["| seed | run | TR t→i | TR i→t | TR unseen | EN t→i (base) | EN i→t | stage-2 s | load (1 min) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for spec in args.runs.split(","):
        out = Path(args.out) / f"seed{args.seed}" / spec.replace(":", "-")
        seconds = run_one(base, recipe, spec, out, args.seed)
        clip = load_clip(str(base.folder))
        clip.model = load_adapter(clip.model, out)
        m = _compare(base, stage1, {spec: clip}, out, args.seed)[spec]
        r1 = lambda s, d="text_to_image", k="after": m[s][k][d]["R@1"]  # noqa: E731
        lines.append(f"| {args.seed} | {spec} | {r1('turkish'):.1f} | {r1('turkish', 'image_to_text'):.1f} |"
                     f" {r1('heldout_pairs'):.1f} | {r1('english'):.1f} ({r1('english', k='before'):.1f}) |"
                     f" {r1('english', 'image_to_text'):.1f} | {seconds:.0f} | {os.getloadavg()[0]:.1f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
