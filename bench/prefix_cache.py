"""`--lora-layers`' prefix pass, first run against a second run in a new process (issue 17).

Two fresh processes, under different PYTHONHASHSEEDs (as two `turkclip train` runs are), each build ViT-B/32's
text tower (random weights, CLIP's real tokenizer) with LoRA in the top `--layers` layers and call
`PrefixText.remember` on the TasvirEt train captions (../shared; synthetic captions without it) with one disk cache.
The first computes the frozen lower layers' pass and writes it; the second must find it (same key whatever the
string-hash order) and only read its index. Prints the seconds of each, the ratio (target ≤ 5 %), the entry's size,
and each process's RSS growth across `remember` (most of it is the model's memory-mapped weights paged in by the
pass or by hashing them for the key; the prefixes themselves stay on disk).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/prefix_cache.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOKENIZER = SHARED / "models" / "clip-tokenizer"
TASVIRET = SHARED / "data" / "tasviret" / "tasviret8k_captions.json"


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def captions() -> list[str]:
    if TASVIRET.is_file():
        from turkclip.data.captions import read_captions

        return [c for r in read_captions(TASVIRET, "tr").split("train").records for c in r.captions]
    words = ["kırmızı", "bir", "köpek", "çimenlerde", "koşuyor", "iki", "çocuk", "deniz", "kenarında", "oynuyor"]
    return [" ".join(words[(i * 7 + k) % len(words)] for k in range(4 + i % 9)) for i in range(1500)]


def child(model: Path, layers: int, cache_dir: Path, limit: int | None = None) -> dict:
    import torch

    from turkclip.roads import load_clip
    from turkclip.roads.adapters import LoraSettings, attach_lora
    from turkclip.roads.text_prefix import PrefixText

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    clip = load_clip(str(model))
    lora = attach_lora(clip.model, LoraSettings(towers="text", layers=layers))
    texts = captions()[:limit]
    path = PrefixText(lora, clip.text, layers, torch.device("cpu"), "fp32")
    before = _rss_mb()
    start = time.perf_counter()
    path.remember(texts, "tr", cache_dir)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "captions": len(set(texts)), "rss_growth_mb": _rss_mb() - before,
            "peak_mb": _rss_mb("VmHWM")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4, help="LoRA in the top N of 12 text layers (default 4)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N captions (a loaded machine)")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.layers, Path(args.child[1]), args.limit)))
        return
    from turkclip.models.architectures import init_model

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "vit-b32"
        init_model("ViT-B/32", TOKENIZER, model, seed=0)
        runs = []
        for seed in ("1", "2"):
            env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT / "src")}
            limit = ["--limit", str(args.limit)] if args.limit else []
            argv = [sys.executable, __file__, "--layers", str(args.layers), *limit, "--child", str(model),
                    str(Path(tmp) / "cache")]
            done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        entry = sum(f.stat().st_size for f in (Path(tmp) / "cache").glob("text-prefix-*"))
    first, second = runs
    ratio = second["seconds"] / first["seconds"]
    print(f"## {time.strftime('%Y-%m-%d %H:%M')} · `--lora-layers` prefix cache across processes"
          f" (`bench/prefix_cache.py --layers {args.layers}`)\n\n"
          f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads"
          f" {os.environ.get('OMP_NUM_THREADS', '1')}; load average {load:.1f} at start,"
          f" {os.getloadavg()[0]:.1f} at end."
          f" ViT-B/32 text tower (random weights), fp32, {first['captions']} distinct train captions.\n\n"
          "| run | PYTHONHASHSEED | prefix pass s | RSS growth across it | process peak RSS |\n"
          "|---|---:|---:|---:|---:|\n"
          f"| first (computes, writes) | 1 | {first['seconds']:.2f} | {first['rss_growth_mb']:.0f} MiB |"
          f" {first['peak_mb']:.0f} MiB |\n"
          f"| second (new process, reads) | 2 | {second['seconds']:.2f} | {second['rss_growth_mb']:.0f} MiB |"
          f" {second['peak_mb']:.0f} MiB |\n\n"
          f"Cache entry: {entry / 2**20:.1f} MiB (float32). Second pass / first: {100 * ratio:.1f} % (target ≤ 5 %:"
          f" {'met' if ratio <= 0.05 else '**NOT met**'}).")


if __name__ == "__main__":
    main()
