"""`turkclip serve`, old code against new, interleaved in one run: what a page of results costs, and how long a
search waits while another client uploads photos.

Both servers run at once, each in its own process (uvicorn, as `turkclip serve` runs it), on one index of
`--photos` phone-sized photos (4032×3024 JPEGs, quality 90, made by upscaling Flickr8k photos from ../shared)
built with a random-init model of ViT-B/32's exact architecture. "old" is the code at `--base` (a git
revision, unpacked with `git archive`), "new" this working tree. Each round measures the old server, then
the new one:

1. a page of results: 24 photos fetched the way the page shows them (old: the original file, `/photo/<p>`;
   new: `/thumb/<p>`, rendered and cached on first sight — each round asks for 24 photos neither
   server has sent yet, then the same 24 again, cached);
2. search latency, alone and while another client uploads phone photos back to back to `/api/search-photo`
   (`--searches` queries each, one at a time).

Scores mean nothing here (random weights): the model's size and architecture are what make the timing.

    OMP_NUM_THREADS=1 python bench/serve_bench.py [--base main] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared"
PAGE = 24

# what `turkclip serve` does, for either version of create_app (old: no photo folder, no allowed hosts)
SERVER = """
import inspect, sys, uvicorn
from turkclip.search.photo_index import open_index
from turkclip.search.photo_search import open_search
from turkclip_train.serve.app import create_app
index, photos, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = open_search(open_index(index))
new = "photos" in inspect.signature(create_app).parameters
app = create_app(engine, photos) if new else create_app(engine)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")
"""


def phone_photos(source: Path, out: Path, n: int) -> list[str]:
    from PIL import Image

    out.mkdir(parents=True)
    names = sorted(p.name for p in source.glob("*.jpg"))[:n]
    for name in names:
        with Image.open(source / name) as im:
            im.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC).save(out / name, quality=90)
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(code: Path, index: Path, photos: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(code))
    return subprocess.Popen([sys.executable, "-c", SERVER, str(index), str(photos), str(port)], env=env)


def wait_up(http, server: subprocess.Popen) -> None:
    while True:
        assert server.poll() is None, "a server died while starting"
        try:
            if http.get("/api/info").status_code == 200:
                return
        except Exception:  # noqa: BLE001 (not listening yet)
            pass
        time.sleep(0.5)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fetch_page(http, route: str, names: list[str]) -> tuple[float, int]:
    """(seconds, bytes) to fetch `names` one after another, as a browser's first 6 connections would, roughly."""
    start = time.perf_counter()
    size = 0
    for name in names:
        response = http.get(f"{route}/{name}")
        assert response.status_code == 200, (route, response.status_code)
        size += len(response.content)
    return time.perf_counter() - start, size


def search_latencies(http, n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        assert http.get("/api/search", params={"q": f"sahilde koşan köpek {i}", "k": PAGE}).status_code == 200
        times.append(time.perf_counter() - start)
        time.sleep(0.2)
    return times


def while_uploading(http, photos: Path, names: list[str], n: int) -> tuple[list[float], int, float]:
    """Search latencies while another client uploads phone photos back to back: (latencies, uploads done, seconds)."""
    import httpx

    stop, done = threading.Event(), []

    def upload():
        with httpx.Client(base_url=str(http.base_url), timeout=120) as uploader:
            while not stop.is_set():
                name = names[len(done) % len(names)]
                data = (photos / name).read_bytes()
                assert uploader.post("/api/search-photo", files={"photo": (name, data, "image/jpeg")}).status_code == 200
                done.append(name)

    thread = threading.Thread(target=upload)
    thread.start()
    while not done:  # the uploads are under way
        time.sleep(0.05)
    start, before = time.perf_counter(), len(done)
    times = search_latencies(http, n)
    uploads, seconds = len(done) - before, time.perf_counter() - start
    stop.set()
    thread.join()
    return times, uploads, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main", help="git revision of the old code (default main)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--searches", type=int, default=15, help="searches per measurement (default 15)")
    args = p.parse_args()

    import httpx

    from turkclip.models.architectures import init_model
    from turkclip.search.photo_index import build_index

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        old_code = work / "old"
        old_code.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "src"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(old_code)], input=archive.stdout, check=True)
        base = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base], check=True,
                              capture_output=True, text=True).stdout.strip()
        load_start = os.getloadavg()[0]
        t0 = time.time()
        names = phone_photos(SHARED / "data" / "flickr8k" / "Images", work / "photos", PAGE * args.rounds)
        init_model("ViT-B/32", SHARED / "models" / "clip-tokenizer", work / "model")
        build_index(work / "photos", work / "index", str(work / "model"), precision="fp32", progress=False)
        setup = time.time() - t0
        ports = {"old": free_port(), "new": free_port()}
        servers = {"old": start(old_code / "src", work / "index", work / "photos", ports["old"]),
                   "new": start(ROOT / "src", work / "index", work / "photos", ports["new"])}
        clients = {name: httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) for name, port in ports.items()}
        try:
            for name in servers:
                wait_up(clients[name], servers[name])
            rows = {name: {"cold": [], "warm": [], "bytes": 0, "alone": [], "busy": [], "uploads": 0, "busy_s": 0.0}
                    for name in servers}
            for r in range(args.rounds):
                page = names[r * PAGE : (r + 1) * PAGE]
                for name, route in [("old", "/photo"), ("new", "/thumb")]:
                    row, http = rows[name], clients[name]
                    seconds, size = fetch_page(http, route, page)
                    row["cold"].append(seconds)
                    row["bytes"] = size
                    row["warm"].append(fetch_page(http, route, page)[0])
                    row["alone"] += search_latencies(http, args.searches)
                    busy, uploads, seconds = while_uploading(http, work / "photos", page, args.searches)
                    row["busy"] += busy
                    row["uploads"] += uploads
                    row["busy_s"] += seconds
            rss = {name: peak_rss_mb(server.pid) for name, server in servers.items()}
        finally:
            for server in servers.values():
                server.terminate()
                server.wait()
        report(rows, rss, args, base, setup, load_start, sum(p.stat().st_size for p in (work / "photos").iterdir()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(rows: dict, rss: dict, args, base: str, setup: float, load_start: float, photo_bytes: int) -> None:
    import torch

    def ms(values):
        return f"{1000 * statistics.median(values):.0f} / {1000 * max(values):.0f}"

    print(f"## {time.strftime('%Y-%m-%d %H:%M')} · `bench/serve_bench.py` · ViT-B/32 architecture (random weights)\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python"
          f" {platform.python_version()}, torch {torch.__version__}. Load average (1 min): {load_start:.1f} at start,"
          f" {os.getloadavg()[0]:.1f} at end. Old = `{args.base}` ({base}), new = this tree; {args.rounds} rounds,"
          f" old then new in each; setup (photos, model, index) {setup:.0f} s.\n")
    print(f"Photos: {PAGE * args.rounds} phone-sized JPEGs (4032×3024, q90, {photo_bytes / PAGE / args.rounds / 1e6:.1f}"
          f" MB each on average).\n")
    print("| server | a page of 24 results: bytes | first view (s, median of rounds) | again (s) "
          "| search alone: median / max (ms) | search during uploads: median / max (ms) | uploads/s meanwhile | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['bytes'] / 1e6:.2f} MB | {statistics.median(row['cold']):.2f} |"
              f" {statistics.median(row['warm']):.2f} | {ms(row['alone'])} | {ms(row['busy'])} | {row['uploads'] / row['busy_s']:.1f} |"
              f" {rss[name]:.0f} MiB |")


if __name__ == "__main__":
    main()
