"""The cost curve of data size: peak RSS, disk and speed as the number of images grows, in four cases.

The bench writes synthetic JPEGs (320×240, shapes on gradients; 10 000 distinct ones, and hard links to them
beyond that) into `--work`, and, for each case and size, runs each measurement in a fresh process:

* `folder` (`--sizes`): a captions file beside the images, one caption each.
  `decode`: `load_image_text_set` from a cold cache (decoding every image once into the pixel store);
  `both`: one epoch of the real `train()`, LoRA in both towers, pixels read from the store per batch;
  `text`: one epoch of `train()` with `--lora-towers text` (the image bank is embedded first, then cached).
* `shards` (`--shard-sizes`): the same images in WebDataset shards of 1000 samples; one epoch of text-only
  `train()` from `--shards` on a cold cache: the shards are read once, straight into the image bank. Reports the
  cache's disk use per sample (bank + metadata) and peak RSS.
* `default` (`--default-sizes`): the default `turkclip train` (LoRA in both towers, validation every epoch; 2
  epochs here) on 5 captions per image with 10 % of the images in `val`, and `turkclip evaluate` of the train
  split: peak RSS at N and 10 N.
* `rates`: on the real Flickr8k JPEGs in ../shared, images per CPU-second of one core (process time, so the
  machine's load does not count) of decoding (CLIP resize + crop) and of reading random rows of the pixel store,
  and disk per image of each way.

The model has CLIP's real input size (224×224 pixels, 32-pixel patches: 150 KB of uint8 per image, as
ViT-B/32) but a tiny width and depth, so the data path, not the network, is what grows with N. Peak RSS is
each process's VmHWM.

    OMP_NUM_THREADS=2 PYTHONPATH=src python bench/data_scale.py                           # every case (long)
    OMP_NUM_THREADS=2 PYTHONPATH=src python bench/data_scale.py --cases shards --shard-sizes 1000,10000
    OMP_NUM_THREADS=2 PYTHONPATH=src python bench/data_scale.py --cases default,rates
"""

from __future__ import annotations

import argparse
import io
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


def make_shards(work: Path, n: int, per_shard: int = 1000) -> str:
    """The first `n` synthetic images as WebDataset shards (key.jpg + key.txt), `per_shard` samples each."""
    import random
    import tarfile

    folder = work / f"shards-{n}"
    count = (n + per_shard - 1) // per_shard
    if not (folder / f"{count - 1:05d}.tar").exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(n)
        for s in range(count):
            with tarfile.open(folder / f".{s:05d}.tar", "w") as tar:
                for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                    tar.add(work / "images" / f"{i:06d}.jpg", arcname=f"{i:06d}.jpg")
                    caption = f"{rng.choice(COLOURS)} bir {rng.choice(SHAPES)} {rng.choice(PLACES)}".encode()
                    info = tarfile.TarInfo(f"{i:06d}.txt")
                    info.size = len(caption)
                    tar.addfile(info, io.BytesIO(caption))
            os.replace(folder / f".{s:05d}.tar", folder / f"{s:05d}.tar")
    return str(folder / f"{{00000..{count - 1:05d}}}.tar")


def make_captions5(work: Path, n: int) -> Path:
    """5 captions per image, every 10th image in `val`: the default run of the issue."""
    import random

    path = work / f"captions5-{n}.csv"
    if not path.exists():
        rng = random.Random(n)
        rows = [f"{i:06d}.jpg,{rng.choice(COLOURS)} bir {rng.choice(SHAPES)} {rng.choice(PLACES)} {k},"
                f"{'val' if i % 10 == 0 else 'train'}" for i in range(n) for k in range(5)]
        path.write_text("image,caption,split\n" + "\n".join(rows) + "\n")
    return path


def child(kind: str, n: int, work: Path) -> dict:
    import shutil

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
    if kind == "default-eval":
        from turkclip_train.cli import main as cli

        start = time.perf_counter()
        rc = cli(["evaluate", "--model", str(model), "--captions", str(make_captions5(work, n)), "--images",
                  str(work / "images"), "--split", "train", "--cache-dir", str(cache), "--precision", "fp32"])
        return {"rc": rc, "seconds": time.perf_counter() - start, "peak_mb": _peak_mb()}
    from turkclip.roads.settings import LoraSettings
    from turkclip_train.config import TrainConfig
    from turkclip_train.train import train

    out = work / f"run-{kind}-{n}"
    shutil.rmtree(out, ignore_errors=True)
    common = dict(output=str(out), model=str(model), epochs=1, batch_size=64, lr=1e-4, precision="fp32",
                  checkpoint_every=10**9, log_every=5, progress=False)
    if kind in ("shards-text", "shards-both"):
        cache = work / f"cache-{kind}-{n}"
        shutil.rmtree(cache, ignore_errors=True)
        cfg = TrainConfig(captions=None, images=None, shards=make_shards(work, n), cache_dir=str(cache),
                          lora=LoraSettings(towers="text" if kind == "shards-text" else "both"), **common)
    elif kind == "default-train":
        cfg = TrainConfig(captions=str(make_captions5(work, n)), images=str(work / "images"), cache_dir=str(cache),
                          **{**common, "epochs": 2})
    else:
        cfg = TrainConfig(captions=str(captions), images=str(work / "images"), val_split=None, cache_dir=str(cache),
                          lora=LoraSettings(towers="both" if kind == "both" else "text"), **common)
    summary = train(cfg)
    windows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [w["pairs_per_s"] for w in windows if w.get("kind") == "train"][1:] or [float("nan")]  # first: warm-up
    shutil.rmtree(out, ignore_errors=True)
    result = {"seconds": summary["seconds"], "images": summary["train_images"], "steps": summary["steps"],
              "pairs_per_s": len(rates) / sum(1 / r for r in rates), "peak_mb": _peak_mb()}
    if kind in ("shards-text", "shards-both"):
        result["cache_bytes"] = sum(f.stat().st_size for f in cache.iterdir())
        result["cache_files"] = sorted({f.name.split("-")[0] for f in cache.iterdir()})
        shutil.rmtree(cache, ignore_errors=True)
    return result


def decode_or_read(work: Path, count: int = 256) -> dict:
    """Images per second of one core (CPU time of this process, so a loaded machine does not skew it): decoding real
    Flickr8k JPEGs (CLIP resize + crop) against reading random rows of the pixel store back."""
    import numpy as np
    import torch

    from turkclip.data.images import try_load
    from turkclip.data.pixel_store import write_store

    torch.set_num_threads(1)
    files = sorted(FLICKR.glob("*.jpg"))[:count]
    start = time.process_time()
    decoded = [try_load(f, 224) for f in files]  # one thread
    decode_s = time.process_time() - start
    store, _ = write_store(work / "cache", "decode-or-read", 224, decoded, len(decoded))
    rng = np.random.default_rng(0)
    reads = 16 * count // 64
    start = time.process_time()
    for _ in range(reads):
        store[rng.choice(len(store), 64, replace=False)]
    read_s = time.process_time() - start
    return {"images": len(files), "decode_per_s": len(files) / decode_s, "read_per_s": reads * 64 / read_s,
            "jpeg_kb": sum(f.stat().st_size for f in files) / len(files) / 1024, "row_kb": store.row_bytes / 1024}


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
    ap.add_argument("--cases", default="folder,shards,default,rates")
    ap.add_argument("--sizes", default="1000,10000,100000", help="images for the folder case")
    ap.add_argument("--shard-sizes", default="1000,10000,100000", help="samples for the shards case")
    ap.add_argument("--default-sizes", default="300,3000", help="images for the default-run case")
    ap.add_argument("--both-max", type=int, default=10000, help="shards case: both towers (streamed) up to this size")
    ap.add_argument("--work", default="/tmp/turkclip-scale")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--keep-cache", action="store_true", help="keep decoded stores between runs (default: decode afresh)")
    args = ap.parse_args()
    work = Path(args.work)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), work)))
        return
    cases = args.cases.split(",")
    sizes = {"folder": [int(s) for s in args.sizes.split(",")], "shards": [int(s) for s in args.shard_sizes.split(",")],
             "default": [int(s) for s in args.default_sizes.split(",")]}
    started, load = time.time(), os.getloadavg()[0]
    make_data(work, [n for case in cases for n in sizes.get(case, [])] or [1])
    make_model(work)
    if not args.keep_cache:
        import shutil

        shutil.rmtree(work / "cache", ignore_errors=True)
    kinds = {"folder": ("decode", "both", "text"), "shards": ("shards-text", "shards-both"),
             "default": ("default-train", "default-eval")}
    results = {}
    for case in cases:
        for n in sizes.get(case, []):
            for kind in kinds[case]:
                if kind == "shards-both" and n > args.both_max:
                    continue  # decoding every image every epoch: slow on a few cores
                results[(kind, n)] = run_child(kind, n, work)
                print(kind, n, results[(kind, n)], flush=True)
    compare = decode_or_read(work) if "rates" in cases and FLICKR.is_dir() else None
    print(report(cases, sizes, results, compare, load, os.getloadavg()[0], time.time() - started))


def report(cases, sizes, results, compare, load0: float, load1: float, seconds: float) -> str:
    import torch

    lines = [f"## {time.strftime('%Y-%m-%d %H:%M')} · data size cost curve (`bench/data_scale.py --cases"
             f" {','.join(cases)}`)", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (torch threads:"
             f" {os.environ.get('OMP_NUM_THREADS', 'default')}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f}"
             f" GiB RAM; torch {torch.__version__}. Load average {load0:.1f} at start, {load1:.1f} at end;"
             f" whole run {seconds / 60:.1f} min.", "",
             "Model: CLIP's input (224×224, 32-px patches) with 2-layer, 64-wide towers (D = 64); batch 64, fp32, LoRA"
             " r=16 on q,v. Synthetic 320×240 JPEGs."]
    if "folder" in cases:
        lines += ["", "**Folder**, one caption per image, one epoch, no validation:", "",
                  "| images | decode once: s (img/s) | store on disk | decode peak RSS | both towers: pairs/s | both:"
                  " peak RSS | text-only: pairs/s | text: peak RSS |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in sizes["folder"]:
            d, b, t = (results[(k, n)] for k in ("decode", "both", "text"))
            lines.append(f"| {n:,} | {d['seconds']:.0f} ({d['images'] / d['seconds']:.0f}) | {d['store_gb']:.2f} GiB"
                         f" | {d['peak_mb']:.0f} MiB | {b['pairs_per_s']:.0f} | {b['peak_mb']:.0f} MiB"
                         f" | {t['pairs_per_s']:.0f} | {t['peak_mb']:.0f} MiB |")
    if "shards" in cases:
        rows = [(n, results[("shards-text", n)]) for n in sizes["shards"]]
        lines += ["", "**Shards**, text-only, one epoch from a cold cache (the shards read once, into the bank):", "",
                  "| samples | run s | read + decode + embed img/s | cache on disk | per sample | what is cached |"
                  " peak RSS |", "|---:|---:|---:|---:|---:|---|---:|"]
        for n, r in rows:
            lines.append(f"| {n:,} | {r['seconds']:.0f} | {r['images'] / r['seconds']:.0f} |"
                         f" {r['cache_bytes'] / 2**20:.1f} MiB | {r['cache_bytes'] / r['images']:.0f} B |"
                         f" {', '.join(r['cache_files'])} | {r['peak_mb']:.0f} MiB |")
        (n0, first), (n1, last) = rows[0], rows[-1]
        per, ratio = last["cache_bytes"] / last["images"], last["peak_mb"] / first["peak_mb"]
        lines += ["", f"Targets at {n1:,} samples: cache ≤ 3 KB per sample: {per:.0f} B ({_met(per <= 3000)});"
                  f" peak RSS within 1.2× of {n0:,}: {ratio:.2f}× ({_met(ratio <= 1.2)})."]
        both = [(n, results[("shards-both", n)]) for n in sizes["shards"] if ("shards-both", n) in results]
        if both:
            lines += ["", "Both towers from the same shards, streamed (decoded by worker processes each epoch), one"
                      " epoch:", "", "| samples | run s | pairs/s | cache on disk | peak RSS (training process) |",
                      "|---:|---:|---:|---:|---:|"]
            lines += [f"| {n:,} | {r['seconds']:.0f} | {r['pairs_per_s']:.0f} | {r['cache_bytes'] / 2**20:.1f} MiB |"
                      f" {r['peak_mb']:.0f} MiB |" for n, r in both]
    if "default" in cases:
        n0, n1 = sizes["default"][0], sizes["default"][-1]
        lines += ["", "**Default run**: `turkclip train` (both towers, validation every epoch, 2 epochs), 5 captions"
                  " per image, 10 % val; `turkclip evaluate` of the train split:", "",
                  "| images | train: s | train: peak RSS | evaluate: s | evaluate: peak RSS |",
                  "|---:|---:|---:|---:|---:|"]
        for n in sizes["default"]:
            t, e = results[("default-train", n)], results[("default-eval", n)]
            lines.append(f"| {n:,} | {t['seconds']:.0f} | {t['peak_mb']:.0f} MiB | {e['seconds']:.0f} |"
                         f" {e['peak_mb']:.0f} MiB |")
        ratios = {name: results[(kind, n1)]["peak_mb"] / results[(kind, n0)]["peak_mb"]
                  for kind, name in (("default-train", "train"), ("default-eval", "evaluate"))}
        lines += ["", f"Target: peak RSS at {n1:,} images ≤ 1.2× that at {n0:,}: "
                  + "; ".join(f"{name} {r:.2f}× ({_met(r <= 1.2)})" for name, r in ratios.items()) + "."]
    if compare:
        c = compare
        lines += ["", f"**Decode or read back** ({c['images']} real Flickr8k JPEGs, mean {c['jpeg_kb']:.0f} KB, per"
                  f" CPU-second of one core): decoding with CLIP's resize and crop {c['decode_per_s']:.0f} images/s; reading random rows"
                  f" of the pixel store {c['read_per_s']:.0f} images/s ({c['read_per_s'] / c['decode_per_s']:.0f}×)."
                  f" Disk per image: the JPEG itself ({c['jpeg_kb']:.0f} KB) to stream, plus {c['row_kb']:.0f} KB"
                  f" of pixel store."]
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


if __name__ == "__main__":
    main()
