"""Exact search against FAISS IVF-Flat on synthetic CLIP-like vectors: where does FAISS win?

For each gallery size (10k, 100k, 1M unit vectors of dimension 512) a child process builds
the gallery, then measures, one query at a time (the web app's case):

* exact: `turkclip.search.photo_search.Searcher(use_faiss=False)` (one matrix product + partial sort);
* FAISS: `turkclip.search.photo_search.build_ivf` (sqrt(N) lists), for several `nprobe`;

build time, query latency p50/p99, recall@10 of FAISS against exact, and the process's peak RSS.

Synthetic data: real CLIP embeddings cluster by content, so the vectors are 1000 Gaussian
"topics" plus per-photo noise (within-topic cosine ~0.5), normalised; queries are fresh draws
from the same mixture. Uniform random vectors would make every ANN index look bad and every
neighbour equally far; this is closer to photos, but it is still synthetic — the recall of a
real gallery should be checked on it.

    OMP_NUM_THREADS=1 python bench/search_bench.py                 # 10k, 100k, 1M (~5-10 min)
    OMP_NUM_THREADS=1 python bench/search_bench.py --sizes 10000   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DIM, TOPICS, K = 512, 1000, 10


def gallery(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((TOPICS, DIM), dtype=np.float32)
    vectors = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):  # in blocks: the noise for 1M at once would double the peak memory
        m = min(100_000, n - start)
        block = centres[rng.integers(0, TOPICS, m)] + rng.standard_normal((m, DIM), dtype=np.float32)
        vectors[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    q = centres[rng.integers(0, TOPICS, 200)] + rng.standard_normal((200, DIM), dtype=np.float32)
    return vectors, q / np.linalg.norm(q, axis=1, keepdims=True)


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latencies(search, queries) -> tuple[list[float], np.ndarray]:
    times, rows = [], []
    search(queries[:1])  # warm-up
    for q in queries:
        t = time.perf_counter()
        rows.append(search(q[None])[1][0])
        times.append(time.perf_counter() - t)
    return times, np.stack(rows)


def stats(times: list[float]) -> dict:
    return {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3)}


def one(n: int, nprobes: list[int], n_queries: int) -> dict:
    import torch

    from turkclip.search.photo_search import Searcher, build_ivf

    t = time.perf_counter()
    vectors, queries = gallery(n)
    queries = queries[:n_queries]
    out = {"n": n, "make_s": time.perf_counter() - t}
    t = time.perf_counter()
    exact = Searcher(torch.from_numpy(vectors), use_faiss=False)
    out["exact"] = {"build_s": time.perf_counter() - t}
    times, truth = latencies(lambda q: exact.search(q, K), queries)
    out["exact"].update(stats(times))
    out["rss_after_exact_mb"] = peak_rss_mb()
    t = time.perf_counter()
    ivf = build_ivf(vectors)
    out["ivf"] = {"build_s": time.perf_counter() - t, "nlist": ivf.nlist, "runs": []}
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        times, got = latencies(lambda q: ivf.search(q, K), queries)
        recall = float(np.mean([len(set(g) & set(w)) / K for g, w in zip(got, truth)]))
        out["ivf"]["runs"].append({"nprobe": nprobe, "recall@10": recall, **stats(times)})
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def report(results: list[dict]) -> str:
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, one query at a time, dimension {DIM}, float32 in memory.",
             "", "| photos | search | build s | p50 ms | p99 ms | recall@10 | peak RSS GiB |", "|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        e = r["exact"]
        lines.append(f"| {r['n']:,} | exact | {e['build_s']:.2f} | {e['p50_ms']:.2f} | {e['p99_ms']:.2f} | 1 |"
                     f" {r['rss_after_exact_mb'] / 1024:.2f} |")
        for run in r["ivf"]["runs"]:
            lines.append(f"| {r['n']:,} | IVF-Flat nlist {r['ivf']['nlist']} nprobe {run['nprobe']} |"
                         f" {r['ivf']['build_s']:.1f} | {run['p50_ms']:.2f} | {run['p99_ms']:.2f} |"
                         f" {run['recall@10']:.3f} | {r['peak_rss_mb'] / 1024:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--nprobes", default="8,16,32,64")
    p.add_argument("--queries", type=int, default=200, help="queries per size (fewer for 1M exact is not needed)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    nprobes = [int(x) for x in args.nprobes.split(",")]
    if args.one:
        print(json.dumps(one(args.one, nprobes, args.queries)))
        return
    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        run = subprocess.run([sys.executable, __file__, "--one", str(n), "--nprobes", args.nprobes,
                              "--queries", str(args.queries)], capture_output=True, text=True, check=True)
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    print(report(results))


if __name__ == "__main__":
    main()
