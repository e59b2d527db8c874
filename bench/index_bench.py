"""`turkclip index` against evaluate's image-embedding rate, and a rerun with nothing changed.

One run, side by side, on the Flickr8k images in ../shared and a random-init model with
ViT-B/32's exact architecture (`turkclip.models.architectures.init_model`):

1. evaluate's path: `load_images` (threaded decode + resize/crop) then `embed_images`, the two
   calls `turkclip evaluate` makes for a split's images (pixel cache off);
2. `build_index` into a fresh folder (decode, embed and save chunk by chunk);
3. `build_index` again with nothing changed, as a library call and as the `turkclip index`
   command (a fresh Python process, imports included);
4. evaluate's path once more (the machine is shared: the two measurements bracket the index run).

Target: indexing at >= 90% of evaluate's images/s; the unchanged rerun under 5 s.

    OMP_NUM_THREADS=1 python bench/index_bench.py              # all 1000 images (~5 min on 2 cores)
    OMP_NUM_THREADS=1 python bench/index_bench.py --images 200 # a subset (copied to a temp folder)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=0, help="use the first N images only (0: all)")
    p.add_argument("--arch", default="ViT-B/32")
    p.add_argument("--folder", default=str(SHARED / "data" / "flickr8k" / "Images"))
    args = p.parse_args()

    import torch

    from turkclip.data.images import load_images
    from turkclip.embedding.embed import embed_images, resolve_precision
    from turkclip.models.architectures import init_model
    from turkclip.search.photo_files import scan_photos
    from turkclip.search.photo_index import build_index

    work = Path(tempfile.mkdtemp(prefix="index-bench-"))
    folder = Path(args.folder)
    names = [f.path for f in scan_photos(folder)]
    if args.images:
        names = names[: args.images]
        (work / "photos").mkdir()
        for n in names:
            shutil.copy2(folder / n, work / "photos" / n)
        folder = work / "photos"
    clip = init_model(args.arch, SHARED / "models" / "clip-tokenizer", work / "model")
    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    model = clip.model.eval()

    def evaluate_path() -> float:
        t = time.perf_counter()
        pixels, kept, bad = load_images(folder, names, clip.preprocess.size)
        embed_images(model, torch.from_numpy(pixels), clip.preprocess, device, precision, progress=False)
        return time.perf_counter() - t

    from turkclip.roads import load_clip

    t = time.perf_counter()
    load_clip(str(work / "model"))
    load_s = time.perf_counter() - t  # build_index pays this; evaluate's path below gets the model ready-made

    rows = []
    eval_1 = evaluate_path()
    rows.append(("evaluate's path (load_images + embed_images)", eval_1))
    t = time.perf_counter()
    report = build_index(folder, work / "index", str(work / "model"), device=device, precision=precision, progress=False)
    index_s = time.perf_counter() - t
    rows.append(("`build_index`, new index", index_s))
    t = time.perf_counter()
    again = build_index(folder, work / "index", progress=False)
    rerun_s = time.perf_counter() - t
    assert again.added == again.changed == again.removed == 0
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "turkclip_train.cli", "index", str(folder), "--output", str(work / "index"),
                    "--no-progress"], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")), capture_output=True)
    cli_s = time.perf_counter() - t
    eval_2 = evaluate_path()
    rows.append(("evaluate's path, again", eval_2))

    n = len(report.index.paths)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__},"
          f" OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {args.arch} random init, {precision},"
          f" {n} images of {args.folder}{' (subset)' if args.images else ''}\n")
    print("| run | seconds | images/s |\n|---|---:|---:|")
    for name, s in rows:
        print(f"| {name} | {s:.1f} | {n / s:.1f} |")
    best_eval = min(eval_1, eval_2)
    print(f"\n`build_index` includes loading the model from its folder ({load_s:.1f} s measured alone); evaluate's path"
          " above does not (the model is already in memory)")
    print(f"indexing rate / evaluate's: {best_eval / index_s:.0%} against the faster evaluate run,"
          f" {((eval_1 + eval_2) / 2) / index_s:.0%} against their mean (target >= 90%)")
    print(f"rerun, nothing changed: {rerun_s:.2f} s as a library call, {cli_s:.1f} s as `turkclip index`"
          " (a new process: imports included) (target < 5 s)")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
