"""Peak memory of the retrieval metrics: block-wise ranks (now) against the old whole-matrix path.

Each measurement runs in a fresh process (so its peak RSS is its own) on synthetic normalised
embeddings (512-d, 5 captions per image, captions = their image's embedding + noise). Prints one
Markdown row per (path, size): the peak RSS while the metrics run (Linux VmHWM, reset just before them),
the RSS before them (Python, torch and the embeddings), the difference, the whole process's peak (which
includes making the synthetic embeddings), and the seconds the metrics took. Both paths are checked to give the same
ranks where both run.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/eval_memory.py                     # the default table
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/eval_memory.py --one new 10000 50000   # one measurement
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SIZES = [("old", 2000, 10000), ("new", 2000, 10000), ("old", 5000, 25000), ("new", 5000, 25000),
         ("new", 10000, 50000)]


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Linux: start VmHWM (the peak RSS) again from the current RSS, so the peak is the metrics' own."""
    Path("/proc/self/clear_refs").write_text("5")


def embeddings(n_images: int, n_texts: int, dim: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    owner = torch.arange(n_texts) % n_images
    texts = F.normalize(images[owner] + 1.5 * torch.randn(n_texts, dim, generator=g) / dim**0.5, dim=-1)
    return texts, images, owner


def old_ranks(text_emb, image_emb, text_image):
    """The code before block-wise ranks (src/turkclip/evaluation/metrics.py at 45ecfe8): whole texts × images matrices."""
    sim = text_emb.float() @ image_emb.float().t()
    correct = sim.gather(1, text_image[:, None])
    t2i = (sim >= correct).sum(1)
    sim = sim.t()
    own = text_image[None, :] == torch.arange(sim.shape[0])[:, None]
    has_caption = own.any(1)
    best_own = sim.masked_fill(~own, float("-inf")).max(1).values
    i2t = (((sim >= best_own[:, None]) & ~own).sum(1) + 1)[has_caption]
    return t2i, i2t


def measure(path: str, n_images: int, n_texts: int) -> dict:
    from turkclip.evaluation.metrics import retrieval_ranks

    texts, images, owner = embeddings(n_images, n_texts)
    before = _status_mb("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    t2i, i2t = (old_ranks if path == "old" else retrieval_ranks)(texts, images, owner)
    seconds = time.perf_counter() - start
    return {"path": path, "images": n_images, "texts": n_texts, "peak_mb": _status_mb("VmHWM"), "before_mb": before,
            "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
            "seconds": seconds, "t2i_sum": int(t2i.sum()), "i2t_sum": int(i2t.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, metavar=("PATH", "IMAGES", "TEXTS"), help="measure one case in this process")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| path | images | captions | peak RSS during the metrics (MB) | RSS before them (MB) | the metrics' own"
          " (MB) | process peak, embeddings' making included (MB) | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    sums = {}
    for path, n_images, n_texts in SIZES:
        run = subprocess.run([sys.executable, __file__, "--one", path, str(n_images), str(n_texts)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            print(f"| {path} | {n_images} | {n_texts} | failed: {run.stderr.strip().splitlines()[-1]} | | | |")
            continue
        r = json.loads(run.stdout)
        sums.setdefault((n_images, n_texts), set()).add((r["t2i_sum"], r["i2t_sum"]))
        print(f"| {path} | {n_images} | {n_texts} | {r['peak_mb']:.0f} | {r['before_mb']:.0f} |"
              f" {r['peak_mb'] - r['before_mb']:.0f} | {r['process_peak_mb']:.0f} | {r['seconds']:.1f} |", flush=True)
    for size, found in sums.items():
        print(f"{size[0]} images × {size[1]} captions: " + ("same ranks on both paths" if len(found) == 1
                                                          else f"RANKS DIFFER: {found}"))


if __name__ == "__main__":
    main()
