"""Does augmentation help? Stage 2 of the offline demo, with and without each augmentation.

The demo world's captions name colours and left/right positions (world.py), which is exactly
what naive augmentation would falsify. Every run starts from the demo's cached stage-1 base
(`turkclip_train.demo.pretrain`, built on first use) and trains the demo's stage-2 recipe
through the product's `train()` — LoRA r=8 q,v + new token rows + 50% English rehearsal, lr 5e-3 —
changing only the towers (text / both) and `augment`. Measured on the 500 held-out test scenes:

* Turkish text→image and image→text R@1, English text→image R@1 (full gallery);
* "side": over test captions that name a side (sol/sağ), how often the model scores the true
  caption above the same caption with left and right swapped (`flip_caption`) — 50% is chance.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/augment_world.py [--seed 0] [--epochs 4]
        [--only 'text:none;both:flip'] [--out /tmp/turkclip-augment-world]

Prints a table and writes it (with the machine) to `--out`/augment_world.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from turkclip.data.captions import read_captions
from turkclip.data.dataset import ImageTextSet, load_image_text_set
from turkclip.data.flip_caption import flipped_or_none
from turkclip.embedding.embed import embed_images, embed_texts
from turkclip.evaluation.evaluate import evaluate
from turkclip.roads import load_clip
from turkclip.roads.adapters import load_adapter
from turkclip.roads.settings import LoraSettings
from turkclip_train.config import TrainConfig
from turkclip_train.demo.pretrain import pretrain
from turkclip_train.demo.run import FULL
from turkclip_train.train import train

SETTINGS = ["none", "crop:0.9-1", "crop:0.6-1", "flip", "crop:0.9-1,flip", "color"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and the stage-1 base")
    parser.add_argument("--train-seed", type=int, default=None, help="seed of stage 2 (default: --seed)")
    parser.add_argument("--epochs", type=int, default=None, help="stage-2 epochs (default: the demo's 4)")
    parser.add_argument("--views", type=int, default=4, help="--augment-views for text-only runs")
    parser.add_argument("--only", default=None, help="';'-separated towers:augment runs,"
                        " e.g. 'text:none;both:crop,flip'")
    parser.add_argument("--out", default="/tmp/turkclip-augment-world")
    parser.add_argument("--eval-only", action="store_true", help="re-measure the adapters already in --out, no training")
    args = parser.parse_args()
    stage1, stage2 = FULL
    epochs = args.epochs or stage2.epochs
    base = pretrain(stage1, args.seed, progress=False)
    clip = load_clip(str(base.folder))
    test = load_image_text_set(read_captions(base.world.turkish, "tr").split("test"), base.world.images,
                               clip.preprocess)
    english = test.with_captions(read_captions(base.world.english, "en"))
    runs = [("base", "-")] + [(t, a) for t in ("text", "both") for a in SETTINGS]
    if args.only:
        runs = [tuple(r.split(":", 1)) for r in args.only.split(";")]
    train_seed = args.seed if args.train_seed is None else args.train_seed
    out_root = Path(args.out) / f"seed{args.seed}" / f"train-seed{train_seed}"
    rows = []
    for towers, augment in runs:
        out = out_root / f"{towers}-{augment.replace(':', '').replace(',', '+')}"
        if towers != "base" and not args.eval_only:
            train(TrainConfig(
                captions=str(base.world.turkish), images=str(base.world.images), output=str(out),
                model=str(base.folder), rehearsal_captions=str(base.world.english),
                rehearsal_ratio=stage2.rehearsal_ratio, epochs=epochs, batch_size=stage2.batch_size, lr=stage2.lr,
                lora=LoraSettings(r=stage2.lora_r, alpha=stage2.lora_r, towers=towers), train_token_rows="new",
                precision="fp32", seed=train_seed, progress=False, augment=augment, augment_views=args.views,
                cache_dir=str(out_root / "cache")))  # text-only: image views embedded in this run, not reused
        # wall time of the training run (image views included), from its summary when only re-measuring
        seconds = json.loads((out / "summary.json").read_text())["seconds"] if towers != "base" else 0.0
        model = load_clip(str(base.folder)).model
        model = (model if towers == "base" else load_adapter(model, out)).eval()
        device = torch.device("cpu")
        tr = evaluate(model, clip.text, clip.preprocess, test, device)
        en = evaluate(model, clip.text, clip.preprocess, english, device)
        side = {"side_acc": side_accuracy(model, clip, test), "en_side_acc": side_accuracy(model, clip, english)}
        row = {"towers": towers, "augment": augment, "train_seed": train_seed, "seconds": seconds, "epochs": epochs,
               "tr_t2i": tr["text_to_image"]["R@1"], "tr_i2t": tr["image_to_text"]["R@1"],
               "en_t2i": en["text_to_image"]["R@1"], "en_i2t": en["image_to_text"]["R@1"], **side}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write(rows, out_root, args, stage2, epochs, len(test))


@torch.inference_mode()
def side_accuracy(model, clip, test: ImageTextSet) -> float:
    """Share (%) of the side-naming test captions scored above their own left/right-swapped version."""
    device = torch.device("cpu")
    pairs = [(i, c, f) for i, caps in enumerate(test.captions) for c in caps
             if (f := flipped_or_none(c, test.lang)) is not None and f != c]
    images = F.normalize(embed_images(model, test.pixels, clip.preprocess, device, progress=False), dim=-1)
    true = F.normalize(embed_texts(model, clip.text, [c for _, c, _ in pairs], test.lang, device), dim=-1)
    swapped = F.normalize(embed_texts(model, clip.text, [f for _, _, f in pairs], test.lang, device), dim=-1)
    owner = torch.tensor([i for i, _, _ in pairs])
    wins = ((images[owner] * true).sum(-1) > (images[owner] * swapped).sum(-1)).float()
    return 100 * wins.mean().item()


def write(rows: list[dict], out_root: Path, args, stage2, epochs: int, n_test: int) -> None:
    head = ("| towers | --augment | wall s | TR text→image R@1 | TR image→text R@1 | EN text→image R@1 |"
            " EN image→text R@1 | TR side % | EN side % |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['towers']} | {r['augment']} | {r['seconds']:.0f} | {r['tr_t2i']:.1f} | {r['tr_i2t']:.1f} |"
              f" {r['en_t2i']:.1f} | {r['en_i2t']:.1f} | {r['side_acc']:.1f} | {r['en_side_acc']:.1f} |" for r in rows]
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch"
               f" {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    text = "\n".join([f"World/base seed {args.seed}, stage-2 seed {rows[0]['train_seed']}, {epochs} stage-2 epochs,"
                      f" {args.views} views (text only), {n_test} test scenes; recipe {stage2}. Machine: {machine}.",
                      "", *lines, ""])
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "augment_world.md").write_text(text)
    (out_root / "augment_world.json").write_text(json.dumps(rows, indent=2))
    print(text)


if __name__ == "__main__":
    main()
