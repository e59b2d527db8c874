"""How fast `turkclip search` and `classify` answer: main's code against this one, in one interleaved run (issue 19).

Each measurement is a fresh `python -m turkclip_train.cli ...` process, timed wall-clock from start to exit, as a
user typing the command sees it. Rounds interleave the variants, so load on the (shared) machine falls on all of
them alike; the report gives the median and the range per variant.

    variants   old: main's code before this branch (a `git archive` of it: --old-src)
               new: this code on torch (same index, same model)
               new --onnx: this code on an `turkclip export-onnx` folder of the same model (no torch imported)
    commands   search: a Turkish text query, top 10
               usage errors: an empty query; classify without --labels

Target (issue 19): on a quiet machine a search answers in <= 3 s and a usage error in <= 1 s.

    git archive 1149649 src | tar -x -C /tmp/turkclip-old      # main's code at the Layout commit
    python bench/command_speed.py --old-src /tmp/turkclip-old/src --index IDX --onnx ONNX_DIR --rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from measure import cpu_name  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parents[1]


def _run(src: Path, argv: list[str]) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(src), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "turkclip_train.cli", *argv], env=env, capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old-src", required=True, help="src/ folder of main's code to compare with")
    p.add_argument("--index", required=True, help="a photo index built with torch (`turkclip index --model ...`)")
    p.add_argument("--onnx", required=True, help="an export-onnx folder of the index's model")
    p.add_argument("--photo", default=str(ROOT.parent / "shared/data/flickr8k/Images/1000268201_693b08cb0e.jpg"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--record", action="store_true", help="append the report to bench/RESULTS.md")
    args = p.parse_args()

    old, new = Path(args.old_src), ROOT / "src"
    query = ["search", args.index, "kırmızı bir araba", "-k", "10"]
    cases = {
        ("search", "old"): (old, query), ("search", "new"): (new, query),
        ("search", "new --onnx"): (new, [*query, "--onnx", args.onnx]),
        ("empty query", "old"): (old, ["search", args.index, " "]),
        ("empty query", "new"): (new, ["search", args.index, " "]),
        ("classify without labels", "old"): (old, ["classify", args.photo]),
        ("classify without labels", "new"): (new, ["classify", args.photo]),
    }
    expected = {"search": 0, "empty query": 1, "classify without labels": 1}
    times: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for case, (src, argv) in cases.items():
            seconds, code = _run(src, argv)
            if code != expected[case[0]]:
                sys.exit(f"{case}: exit status {code}, expected {expected[case[0]]}")
            times[case].append(seconds)
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.rounds} done (load {load[-1]:.1f})", file=sys.stderr)

    lines = [f"## Command speed, old vs new ({date.today()}, bench/command_speed.py)", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, Python"
             f" {platform.python_version()}; 1-minute load average {min(load):.1f}–{max(load):.1f} during the run;"
             f" {args.rounds} interleaved rounds, each a fresh process; index {args.index}.", "",
             "| command | code | median wall s | min–max |", "|---|---|---|---|"]
    for (command, code), values in times.items():
        lines.append(f"| {command} | {code} | {statistics.median(values):.2f} | {min(values):.2f}–{max(values):.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.record:
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as f:
            f.write("\n" + report)


if __name__ == "__main__":
    main()
