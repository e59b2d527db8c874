"""The cost curve of data size: peak RSS and pairs/s of one training epoch at 1k, 10k and 100k images.

The bench writes synthetic JPEGs (320×240, shapes on gradients, one Turkish caption each; 10 000
distinct ones, and hard links to them beyond that) into `--work`, then, for each size, runs in fresh processes:

* `decode`: `load_image_text_set` from a cold cache: decoding every image once into the pixel store;
* `both`: one epoch of the real `train()`, LoRA in both towers, pixels read from the store per batch;
* `text`: one epoch of `train()` with `--lora-towers text` (the image bank is embedded first, then cached).

The model has CLIP's real input size (224×224 pixels, 32-pixel patches: 150 KB of uint8 per image, as
ViT-B/32) but a tiny width and depth, so the data path, not the network, is what grows with N. Peak RSS is
each process's VmHWM. Before the pixel store every image was held in RAM (150 KB × N on every process).

A second table answers "decode in DataLoader workers each epoch, or decode once and read rows back?" on
the real Flickr8k JPEGs in ../shared: images/s of decoding (CLIP resize + crop, all cores) against images/s
of reading random rows of the store.

    OMP_NUM_THREADS=2 PYTHONPATH=src python bench/data_scale.py                      # 1k, 10k, 100k (~25 min)
    OMP_NUM_THREADS=2 PYTHONPATH=src python bench/data_scale.py --sizes 500,2000     # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOKENIZER = SHARED / "models" / "clip-tokenizer"
FLICKR = SHARED / "data" / "flickr8k" / "Images"
COLOURS = ["kırmızı", "mavi", "yeşil", "sarı", "mor", "turuncu", "siyah", "beyaz"]
SHAPES = ["top", "kutu", "üçgen", "yıldız", "halka"]
PLACES = ["çimenlerin üstünde", "masada", "kumda", "suyun yanında", "karda"]


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- synthetic data --------------------------------------------------------------------------------------------------


def _write_image(i: int) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:240, 0:320]
    base = rng.integers(0, 255, 3)
    slope = rng.normal(0, 0.4, (3, 2))
    img = np.stack([np.clip(base[c] + slope[c, 0] * x + slope[c, 1] * y, 0, 255) for c in range(3)], -1)
    im = Image.fromarray(img.astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(3):
        x0, y0 = rng.integers(0, 260), rng.integers(0, 180)
        draw.rectangle([x0, y0, x0 + rng.integers(20, 60), y0 + rng.integers(20, 60)],
                       fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path = Path(os.environ["SCALE_IMAGES"]) / f"{i:06d}.jpg"
    im.save(path, quality=85)


UNIQUE = 10_000  # distinct JPEGs; files beyond are hard links to them (each still decoded: its own path)


def make_data(work: Path, sizes: list[int]) -> dict[int, Path]:
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    need = [i for i in range(min(UNIQUE, max(sizes))) if not (images / f"{i:06d}.jpg").exists()]
    if need:
        start = time.perf_counter()
        os.environ["SCALE_IMAGES"] = str(images)
        with Pool(os.cpu_count()) as pool:
            pool.map(_write_image, need, chunksize=500)
        print(f"wrote {len(need)} synthetic JPEGs in {time.perf_counter() - start:.0f} s", flush=True)
    for i in range(UNIQUE, max(sizes)):
        if not (images / f"{i:06d}.jpg").exists():
            os.link(images / f"{i % UNIQUE:06d}.jpg", images / f"{i:06d}.jpg")
    files = {}
    for n in sizes:
        path = work / f"captions-{n}.csv"
        if not path.exists():
            import random

            rng = random.Random(n)
            rows = [f"{i:06d}.jpg,{rng.choice(COLOURS)} bir {rng.choice(SHAPES)} {rng.choice(PLACES)},train"
                    for i in range(n)]
            path.write_text("image,caption,split\n" + "\n".join(rows) + "\n")
        files[n] = path
    return files


def make_model(work: Path) -> Path:
    """CLIP's input size with a tiny network: the data path is what the bench measures."""
    from turkclip.models import architectures

    folder = work / "model-224-tiny"
    if not (folder / "config.json").exists():
        architectures.ARCHITECTURES["scale-bench"] = architectures._config(
            dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=77),
            dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 image_size=224, patch_size=32),
            64)
        architectures.init_model("scale-bench", TOKENIZER, folder)
    return folder


# --- one measurement per process ------------------------------------------------------------------------------------


def child(kind: str, n: int, work: Path) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    captions, model, cache = work / f"captions-{n}.csv", work / "model-224-tiny", work / "cache"
    if kind == "decode":
        from turkclip.data.captions import read_captions
        from turkclip.data.dataset import load_image_text_set
        from turkclip.data.images import Preprocess

        start = time.perf_counter()
        data = load_image_text_set(read_captions(captions, "tr"), work / "images", Preprocess(size=224), cache_dir=cache)
        return {"seconds": time.perf_counter() - start, "images": len(data), "peak_mb": _peak_mb(),
                "store_gb": data.pixels.path.stat().st_size / 2**30}
    from turkclip.roads.settings import LoraSettings
    from turkclip_train.config import TrainConfig
    from turkclip_train.train import train

    out = work / f"run-{kind}-{n}"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    summary = train(TrainConfig(captions=str(captions), images=str(work / "images"), output=str(out), model=str(model),
                                val_split=None, epochs=1, batch_size=64, lr=1e-4, precision="fp32",
                                lora=LoraSettings(towers="both" if kind == "both" else "text"), cache_dir=str(cache),
                                checkpoint_every=10**9, log_every=5, progress=False))
    windows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [w["pairs_per_s"] for w in windows if w.get("kind") == "train"][1:] or [float("nan")]  # first: warm-up
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": summary["seconds"], "images": summary["train_images"], "steps": summary["steps"],
            "pairs_per_s": len(rates) / sum(1 / r for r in rates), "peak_mb": _peak_mb()}


def decode_or_read(work: Path, count: int = 512) -> dict:
    """Images/s: decoding real Flickr8k JPEGs (CLIP resize + crop, a thread per core) against reading rows back."""
    import numpy as np

    from turkclip.data.images import decode_in_order, try_load
    from turkclip.data.pixel_store import write_store

    files = sorted(FLICKR.glob("*.jpg"))[:count]
    start = time.perf_counter()
    decoded = list(decode_in_order(files, lambda p: try_load(p, 224)))
    decode_s = time.perf_counter() - start
    store, _ = write_store(work / "cache", "decode-or-read", 224, decoded, len(decoded))
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(count // 64):
        store[rng.choice(len(store), 64, replace=False)]
    read_s = time.perf_counter() - start
    return {"images": len(files), "decode_per_s": len(files) / decode_s, "read_per_s": (count // 64) * 64 / read_s,
            "jpeg_kb": sum(f.stat().st_size for f in files) / len(files) / 1024}


# --- driver ----------------------------------------------------------------------------------------------------------


def run_child(kind: str, n: int, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, __file__, "--child", kind, str(n), "--work", str(work)],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"{kind} {n} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--work", default="/tmp/turkclip-scale")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--keep-cache", action="store_true", help="keep decoded stores between runs (default: decode afresh)")
    args = ap.parse_args()
    work = Path(args.work)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), work)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    started, load = time.time(), os.getloadavg()[0]
    make_data(work, sizes)
    make_model(work)
    if not args.keep_cache:
        import shutil

        shutil.rmtree(work / "cache", ignore_errors=True)
    rows = []
    for n in sizes:
        row = {"n": n}
        for kind in ("decode", "both", "text"):
            row[kind] = run_child(kind, n, work)
            print(n, kind, row[kind], flush=True)
        rows.append(row)
    compare = decode_or_read(work) if FLICKR.is_dir() else None
    print(report(rows, compare, load, os.getloadavg()[0], time.time() - started))


def report(rows: list[dict], compare: dict | None, load0: float, load1: float, seconds: float) -> str:
    import torch

    lines = [f"## {time.strftime('%Y-%m-%d %H:%M')} · data size cost curve (`bench/data_scale.py`)", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (torch threads:"
             f" {os.environ.get('OMP_NUM_THREADS', 'default')}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f}"
             f" GiB RAM; torch {torch.__version__}. Load average {load0:.1f} at start, {load1:.1f} at end;"
             f" whole run {seconds / 60:.1f} min.", "",
             "Model: CLIP's input (224×224, 32-px patches) with 2-layer, 64-wide towers; batch 64, fp32, LoRA r=16 on"
             " q,v; one epoch, no validation. Synthetic 320×240 JPEGs, one caption each.", "",
             "| images | decode once: s (img/s) | store on disk | decode peak RSS | both towers: pairs/s | both: peak RSS"
             " | text-only: pairs/s | text: peak RSS | all pixels in RAM (before) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d, b, t = r["decode"], r["both"], r["text"]
        lines.append(f"| {r['n']:,} | {d['seconds']:.0f} ({d['images'] / d['seconds']:.0f}) | {d['store_gb']:.2f} GiB"
                     f" | {d['peak_mb']:.0f} MiB | {b['pairs_per_s']:.0f} | {b['peak_mb']:.0f} MiB | {t['pairs_per_s']:.0f}"
                     f" | {t['peak_mb']:.0f} MiB | {r['n'] * 3 * 224 * 224 / 2**20:,.0f} MiB |")
    first, last = rows[0], rows[-1]
    ratio = last["both"]["peak_mb"] / first["both"]["peak_mb"]
    lines += ["", f"Target: peak RSS of a both-tower epoch at {last['n']:,} images ≤ 1.5× that at {first['n']:,}:"
              f" {ratio:.2f}× ({'met' if ratio <= 1.5 else '**NOT met**'}); text-only"
              f" {last['text']['peak_mb'] / first['text']['peak_mb']:.2f}×."]
    if compare:
        lines += ["", f"Decode every epoch or once? {compare['images']} real Flickr8k JPEGs (mean"
                  f" {compare['jpeg_kb']:.0f} KB): decoding with CLIP's resize and crop on all cores"
                  f" {compare['decode_per_s']:.0f} images/s; reading random rows of the pixel store"
                  f" {compare['read_per_s']:.0f} images/s ({compare['read_per_s'] / compare['decode_per_s']:.0f}× faster)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
