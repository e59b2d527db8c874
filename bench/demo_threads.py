"""Does `turkclip demo --seed S` give the same numbers whatever the thread count, and what does that cost?

Each run is a fresh `turkclip demo` (stage 1 built from scratch in its own TURKCLIP_CACHE) in a subprocess:

* `1` / `2`: this code with OMP_NUM_THREADS=1 / 2 (the demo sets torch to one thread itself; the two must agree);
* `old-2`: the thread count left to torch (2 here), as before the demo fixed it: the demo's `one_thread` is
  replaced by a no-op in that process. Its numbers differ from the others; its time is the speed given up.

Runs are interleaved (1, 2, old-2, 1, 2, old-2, ...) so load changes hit every mode alike.

    PYTHONPATH=src nice -n 5 .venv/bin/python bench/demo_threads.py [--full] [--repeats 2] [--modes 1,2,old-2]

Prints the setting and a markdown table (each run's load at its start) for bench/RESULTS.md.
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

import torch

# Runs one demo and prints its numbers as JSON; argv: output folder, seed, quick (0/1), keep the thread count (0/1).
CHILD = """
import contextlib, json, sys, time
from pathlib import Path
import turkclip_train.demo.pretrain as pretrain, turkclip_train.demo.run as run
if sys.argv[4] == "1":  # before the fix: the thread count torch starts with
    pretrain.one_thread = run.one_thread = contextlib.nullcontext
threads = {}
def note(name, f):
    def wrapped(*a, **kw):
        threads[name] = __import__("torch").get_num_threads()
        return f(*a, **kw)
    return wrapped
run.pretrain, run.train_lora = note("stage 1", run.pretrain), note("stage 2", run.train_lora)
r = run.run_demo(Path(sys.argv[1]), seed=int(sys.argv[2]), quick=sys.argv[3] == "1")
r1 = lambda m: m["text_to_image"]["R@1"]
print("RESULT " + json.dumps({"seconds": r["seconds"], "stage1_seconds": r["stage1"]["seconds"], "threads": threads,
      "tr": r1(r["turkish"]["after"]), "tr_i2t": r["turkish"]["after"]["image_to_text"]["R@1"],
      "unseen": r1(r["heldout_pairs"]["after"]), "en_before": r1(r["english"]["before"]),
      "en": r1(r["english"]["after"]), "metrics": {k: r[k] for k in ("turkish", "english", "heldout_pairs")}}))
"""


def run_once(mode: str, seed: int, quick: bool, work: Path) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"demo-{mode}-", dir=work))
    env = {**os.environ, "OMP_NUM_THREADS": mode.split("-")[-1], "TURKCLIP_CACHE": str(folder / "cache")}
    load = os.getloadavg()[0]
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder / "out"), str(seed), str(int(quick)),
                          str(int(mode.startswith("old")))], env=env, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SystemExit(f"demo ({mode}) failed:\n{run.stderr[-3000:]}")
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
    return {"mode": mode, "wall": time.perf_counter() - started, "load": load, **json.loads(line[len("RESULT "):])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the full demo (default: --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", default="1,2,old-2")
    args = parser.parse_args()
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory(prefix="demo-threads-") as tmp:
        runs = [run_once(mode, args.seed, not args.full, Path(tmp)) for _ in range(args.repeats) for mode in modes]
    first = {m: next(r for r in runs if r["mode"] == m) for m in modes}
    rows = [("| mode | torch threads (stage 1, stage 2) | load at start | wall s | stage 1 s | Turkish t→i | Turkish i→t"
             " | unseen pairs | English before → after | same metrics as mode 1's first run |"),
            "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in runs:
        same = r["metrics"] == first[modes[0]]["metrics"]
        rows.append(f"| {r['mode']} | {r['threads'].get('stage 1')}, {r['threads'].get('stage 2')} | {r['load']:.1f} |"
                    f" {r['wall']:.0f} | {r['stage1_seconds']:.0f} | {r['tr']:.2f} | {r['tr_i2t']:.2f} |"
                    f" {r['unseen']:.2f} | {r['en_before']:.2f} → {r['en']:.2f} | {'yes' if same else 'no'} |")
    print(f"{time.strftime('%Y-%m-%d')}: `bench/demo_threads.py{' --full' if args.full else ''} --seed {args.seed}"
          f" --repeats {args.repeats} --modes {args.modes}`; {platform.processor() or platform.machine()},"
          f" {os.cpu_count()} cores, torch {torch.__version__}; every run builds stage 1 afresh; R@1 % on the"
          f" {'500' if args.full else '100'} held-out scenes.\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
