"""What augmentation costs per epoch on the real data (the 753 TasvirEt train images in ../shared).

Both towers: the pixels of every batch are augmented on the CPU before the forward pass. This
times exactly that (`batch_pixels` over one epoch's batches, batch 64, 224×224 uint8) for each
policy, plus the caption side (`epoch_batches` with flip: every caption read for left/right words).
It does not depend on the model, so it is set beside the ViT-B/32 epoch times in bench/RESULTS.md.

Text only: the cost is one-time, the image forward passes of the cached views. This times one
pass of the image tower over the 753 images (random-init ViT-B/32, or --model) — a view bank
costs views × (2 with flip) such passes, done once and read from the cache afterwards.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/augment_cost.py [--model-pass] [--repeat 2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from turkclip import cache
from turkclip.data.augment import batch_pixels, parse_policy
from turkclip.data.captions import read_captions
from turkclip.data.dataset import load_image_text_set
from turkclip.data.images import Preprocess
from turkclip.data.sampling import epoch_batches

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CAPTIONS = SHARED / "data" / "tasviret" / "tasviret8k_captions.present.json"
IMAGES = SHARED / "data" / "flickr8k" / "Images"
POLICIES = ["none", "flip", "crop", "crop,flip", "crop,flip,color", "color"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="epochs timed per policy (the best is reported)")
    parser.add_argument("--model-pass", action="store_true", help="also time one ViT-B/32 image-tower pass (slow)")
    parser.add_argument("--train-epoch", action="store_true",
                        help="also time a both-tower ViT-B/32 epoch with --augment none and crop,flip (slow)")
    args = parser.parse_args()
    data = load_image_text_set(read_captions(CAPTIONS, "tr").split("train"), IMAGES, Preprocess(224),
                               cache_dir=cache.default_dir())
    print(f"{len(data)} train images, pixels {tuple(data.pixels.shape)}; machine: {platform.processor()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    print("| --augment | captions (epoch_batches) s | pixels (batch_pixels) s | per epoch total s |")
    print("|---|---:|---:|---:|")
    for text in POLICIES:
        policy = parse_policy(text)
        best_c = best_p = float("inf")
        for epoch in range(args.repeat):
            t0 = time.perf_counter()
            batches = epoch_batches(data.captions, "tr", 64, seed=0, epoch=epoch, flip=policy.flip)
            t1 = time.perf_counter()
            for batch in batches:
                batch_pixels(data.pixels, batch, policy, 0, epoch)
            t2 = time.perf_counter()
            best_c, best_p = min(best_c, t1 - t0), min(best_p, t2 - t1)
        print(f"| {text} | {best_c:.2f} | {best_p:.2f} | {best_c + best_p:.2f} |", flush=True)
    if args.model_pass:
        model_pass(data)
    if args.train_epoch:
        train_epoch()


def model_pass(data) -> None:
    from turkclip.embedding.embed import embed_images, resolve_precision
    from turkclip.models.architectures import init_model

    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    with tempfile.TemporaryDirectory() as tmp:
        clip = init_model("ViT-B/32", SHARED / "models" / "clip-tokenizer", Path(tmp) / "m")
    clip.model.eval()
    t0 = time.perf_counter()
    embed_images(clip.model, data.pixels, clip.preprocess, device, precision, progress=False)
    seconds = time.perf_counter() - t0
    print(f"one ViT-B/32 image-tower pass over {len(data)} images ({precision}): {seconds:.1f} s — a text-only view"
          f" bank costs views × (2 with flip) of these, once")


def train_epoch() -> None:
    """One both-tower epoch of `train()` (ViT-B/32 random init, batch 64, no validation), side by side."""
    from turkclip.models.architectures import init_model
    from turkclip_train.config import TrainConfig
    from turkclip_train.train import train

    with tempfile.TemporaryDirectory() as tmp:
        init_model("ViT-B/32", SHARED / "models" / "clip-tokenizer", Path(tmp) / "m")
        for augment in ("none", "crop:0.9-1,flip", "none", "crop:0.9-1,flip"):  # twice each, interleaved
            out = f"{tmp}/{augment}-{time.time()}"
            summary = train(TrainConfig(captions=str(CAPTIONS), images=str(IMAGES), output=out, model=f"{tmp}/m",
                                        epochs=1, val_split=None, augment=augment, progress=False,
                                        cache_dir=str(cache.default_dir())))
            print(f"both towers, --augment {augment}: {summary['steps']} steps, {summary['seconds']:.1f} s for the"
                  f" whole train() (data from the pixel cache, 1 epoch, {summary['precision']})", flush=True)


if __name__ == "__main__":
    main()
