"""Text-only vs both-tower adaptation, and in-batch vs bank negatives, in the offline demo world.

Issue 5 asks two questions that need a model that has learnt something, which only the demo
world gives us offline:
  1. Does text-only training (frozen, cached image tower) reach the same loss as both-tower
     training on the same run budget?  -> the loss curves on one plot.
  2. Does scoring each caption against the whole cached image bank help?  -> held-out metrics.

Every run uses the demo's stage-1 base (cached after the first `turkclip demo`) and the demo's
stage-2 recipe through the product's `train()`; only the towers / negatives change.

    .venv/bin/python bench/demo_world_modes.py [--seed 0] [--out /tmp/demo-modes]

Prints a table, writes `bench/demo_world_modes.png` and appends a section to `bench/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from turkclip.data.captions import read_captions
from turkclip.data.dataset import load_image_text_set
from turkclip.evaluation.evaluate import evaluate
from turkclip.roads import load_clip
from turkclip.roads.adapters import load_adapter
from turkclip.roads.settings import LoraSettings
from turkclip_train.config import TrainConfig
from turkclip_train.demo.pretrain import pretrain
from turkclip_train.demo.run import FULL
from turkclip_train.logs import plot_curves
from turkclip_train.train import train

HERE = Path(__file__).resolve().parent
MODES = {  # label: (LoRA towers, negatives)
    "both towers": ("both", "batch"),
    "text tower, cached images": ("text", "batch"),
    "text tower, cached images, bank negatives": ("text", "bank"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/turkclip-demo-modes")
    args = parser.parse_args()
    stage1, stage2, _ = FULL
    base = pretrain(stage1, args.seed)
    clip = load_clip(str(base.folder))
    test = load_image_text_set(read_captions(base.world.turkish, "tr").split("test"), base.world.images,
                               clip.preprocess)
    english = test.with_captions(read_captions(base.world.english, "en"))
    device = torch.device("cpu")

    rows, curves = [], {}
    for label, (towers, negatives) in MODES.items():
        out = Path(args.out) / towers / negatives
        started = time.perf_counter()
        summary = train(TrainConfig(
            captions=str(base.world.turkish), images=str(base.world.images), output=str(out),
            model=str(base.folder), rehearsal_captions=str(base.world.english),
            rehearsal_ratio=stage2.rehearsal_ratio, epochs=stage2.epochs, batch_size=stage2.batch_size,
            lr=stage2.lr, lora=LoraSettings(r=stage2.lora_r, alpha=stage2.lora_r, towers=towers),
            train_token_rows="new", negatives=negatives, precision="fp32", seed=args.seed, progress=False,
            cache_dir=None if towers == "both" else str(Path(args.out) / "cache")))
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        curves[label] = records
        model = load_adapter(load_clip(str(base.folder)).model, out)
        tr = evaluate(model, clip.text, clip.preprocess, test, device)
        en = evaluate(model, clip.text, clip.preprocess, english, device)
        last = [r["loss"] for r in records if r["kind"] == "train"][-1]
        rows.append((label, seconds, summary["steps"], last, tr["text_to_image"]["R@1"], tr["image_to_text"]["R@1"],
                     en["text_to_image"]["R@1"]))
        print(f"{label}: {seconds:.0f} s, last loss {last:.3f}, Turkish T2I R@1 {tr['text_to_image']['R@1']:.1f}")

    png = HERE / "demo_world_modes.png"
    plot_curves(curves, png)
    table = ["| mode | wall time (s, incl. image embedding) | steps | last train loss | TR text→image R@1 |"
             " TR image→text R@1 | EN text→image R@1 |", "|---|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {r[0]} | {r[1]:.0f} | {r[2]} | {r[3]:.3f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.1f} |" for r in rows]
    section = "\n".join([
        f"\n## Demo world: text-only vs both towers, bank negatives ({time.strftime('%Y-%m-%d')})\n",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch"
        f" {torch.__version__}. Seed {args.seed}; demo stage-2 recipe ({stage2}); held-out test scenes"
        f" ({len(test)} images). Note: the bank loss is a different objective (thousands of negatives), so its"
        " loss values are not comparable with the in-batch ones; compare it by the retrieval columns.\n",
        *table, f"\nCurves: `bench/{png.name}`.\n"])
    print(section)
    with (HERE / "RESULTS.md").open("a") as f:
        f.write(section)


if __name__ == "__main__":
    main()
