"""ONNX export against torch on the 1000 Flickr8k photos in ../shared (issue 18): speed, agreement, install size.

One run, the encoders side by side on the same decoded photos and queries, interleaved (the machine is shared):

1. photos/s: every photo's pixels embedded by torch, by the fp32 export and by the int8 export, a batch of 32 each
   in turn (decoding, the same code for all, is timed once apart);
2. query p50/p90: a Turkish caption from TasvirEt embedded and searched (top 10 of the gallery), per encoder in turn;
3. agreement: top-10 photo lists for the text queries and for 50 photos as queries (ONNX fp32 against torch: the
   same list, in the same order?), zero-shot labels (top-5 of 20 Turkish labels per photo), and int8 against fp32
   (mean overlap of the top-10 sets);
4. the installed size of a fresh torch-free serve environment (`pip install --no-deps` turkclip +
   requirements-serve.txt) beside this venv's, and a search run in it.

The model is a random-init ViT-B/32 (`turkclip init-model`): the speed is the real architecture's; its rankings are
those of random weights (scores close together), a harder case for agreement than a trained model's.

    python bench/onnx_bench.py --model VIT_B32 --onnx FP32_DIR --onnx-int8 INT8_DIR [--serve-venv DIR] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from measure import cpu_name  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared"
LABELS = ["köpek", "kedi", "çocuk", "kadın", "adam", "bisiklet", "araba", "deniz", "kar", "çimen", "top", "su",
          "dağ", "sokak", "plaj", "kalabalık", "bebek", "kuş", "at", "tekne"]
BATCH = 32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder (e.g. `turkclip init-model ViT-B/32 DIR`)")
    p.add_argument("--onnx", required=True, help="`turkclip export-onnx --model MODEL` folder")
    p.add_argument("--onnx-int8", required=True, help="the same with --int8")
    p.add_argument("--images", type=int, default=0, help="first N photos only (0: all)")
    p.add_argument("--queries", type=int, default=100, help="TasvirEt captions used as text queries")
    p.add_argument("--serve-venv", help="where to build the torch-free environment (default: a temp folder;"
                                        " 'skip' to leave it out)")
    p.add_argument("--serve-only", action="store_true", help="only the torch-free environment's size and run")
    p.add_argument("--record", action="store_true", help="append the report to bench/RESULTS.md")
    args = p.parse_args()
    if args.serve_only:
        print(_serve_environment(args))
        return

    from turkclip.data.images import load_images
    from turkclip.onnx.runtime import OnnxEncoder
    from turkclip.roads import load_clip
    from turkclip.search.classify import label_embeddings
    from turkclip.search.photo_files import scan_photos
    from turkclip.search.torch_encoder import TorchEncoder

    load = [os.getloadavg()[0]]
    folder = SHARED / "data" / "flickr8k" / "Images"
    names = [f.path for f in scan_photos(folder)][: args.images or None]
    encoders = {"torch": TorchEncoder(load_clip(args.model)), "onnx fp32": OnnxEncoder(args.onnx),
                "onnx int8": OnnxEncoder(args.onnx_int8)}
    start = time.perf_counter()
    pixels, kept, bad = load_images(folder, names, encoders["torch"].image_size)
    decode_rate = len(names) / (time.perf_counter() - start)

    for encoder in encoders.values():  # warm-up: first-call costs (sessions, allocations) are not per photo
        encoder.pixels(pixels[:2])
        encoder.texts(["ısınma"])
    seconds = dict.fromkeys(encoders, 0.0)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
    for s in range(0, len(pixels), BATCH):
        for name, encoder in encoders.items():
            t = time.perf_counter()
            parts[name].append(encoder.pixels(pixels[s : s + BATCH]))
            seconds[name] += time.perf_counter() - t
    load.append(os.getloadavg()[0])
    galleries = {name: np.concatenate(v) for name, v in parts.items()}

    captions = _captions(args.queries)
    latency: dict[str, list[float]] = {name: [] for name in encoders}
    text_top = {name: [] for name in encoders}
    for caption in captions:
        for name, encoder in encoders.items():
            t = time.perf_counter()
            query = encoder.texts([caption])
            top = np.argsort(-(galleries[name] @ query[0]), kind="stable")[:10]
            latency[name].append(time.perf_counter() - t)
            text_top[name].append(top)
    load.append(os.getloadavg()[0])
    image_top = {name: [np.argsort(-(g @ g[i]), kind="stable")[:10] for i in range(0, len(g), max(1, len(g) // 50))]
                 for name, g in galleries.items()}
    label_top = {name: np.argsort(-(galleries[name] @ label_embeddings(e, LABELS).T), axis=1, kind="stable")[:, :5]
                 for name, e in encoders.items()}

    rows = [f"## ONNX export vs torch ({date.today()}, bench/onnx_bench.py)", "",
            f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, no GPU, Python"
            f" {platform.python_version()}, torch {_version('torch')}, onnxruntime {_version('onnxruntime')}; each"
            f" engine with its default threads; 1-minute load average {min(load):.1f}–{max(load):.1f}. Model:"
            " random-init"
            f" ViT-B/32 ({args.model}); {len(kept)} Flickr8k photos ({len(bad)} unreadable), {len(captions)} TasvirEt"
            f" captions as queries. Decoding (the same code for every engine): {decode_rate:.1f} photos/s.", "",
            "| engine | embed photos/s | query p50 ms | query p90 ms | folder MiB |", "|---|---|---|---|---|"]
    sizes = {"torch": _mib(Path(args.model)), "onnx fp32": _mib(Path(args.onnx)),
             "onnx int8": _mib(Path(args.onnx_int8))}
    for name in encoders:
        ms = sorted(1000 * v for v in latency[name])
        rows.append(f"| {name} | {len(pixels) / seconds[name]:.1f} | {statistics.median(ms):.1f} |"
                    f" {ms[int(0.9 * (len(ms) - 1))]:.1f} | {sizes[name]:.0f} |")
    rows += ["", "| agreement | text→image top-10 | image→image top-10 | top-5 of 20 labels |", "|---|---|---|---|",
             f"| onnx fp32 = torch (same list, same order) | {_same(text_top, 'onnx fp32')} |"
             f" {_same(image_top, 'onnx fp32')} | {_same(label_top, 'onnx fp32')} |",
             f"| onnx int8 vs fp32 (mean overlap of the top sets) | {_overlap(text_top, 'onnx int8')} |"
             f" {_overlap(image_top, 'onnx int8')} | {_overlap(label_top, 'onnx int8')} |"]
    if args.serve_venv != "skip":
        rows += ["", _serve_environment(args)]
    report = "\n".join(rows) + "\n"
    print(report)
    if args.record:
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as f:
            f.write("\n" + report)


def _captions(n: int) -> list[str]:
    data = json.loads((SHARED / "data" / "tasviret" / "tasviret8k_captions.present.json").read_text(encoding="utf-8"))
    return [s["raw"] for image in data["images"] for s in image["sentences"]][:n]


def _same(tops: dict, name: str) -> str:
    same = sum(np.array_equal(a, b) for a, b in zip(tops[name], tops["torch"]))
    return f"{same}/{len(tops['torch'])}"


def _overlap(tops: dict, name: str) -> str:
    k = len(tops["onnx fp32"][0])
    return f"{np.mean([len(set(a) & set(b)) / k for a, b in zip(tops[name], tops['onnx fp32'])]):.3f}"


def _mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _serve_environment(args) -> str:
    """A fresh venv with turkclip (no dependencies) and requirements-serve.txt: its size, and a search run in it."""
    venv = Path(args.serve_venv or tempfile.mkdtemp(prefix="turkclip-serve-")) / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "--no-deps", str(ROOT)], check=True)
        subprocess.run([*pip, "-r", str(ROOT / "requirements-serve.txt")], check=True)
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for f in sorted((SHARED / "data" / "flickr8k" / "Images").iterdir())[:20]:
            shutil.copy(f, photos)  # copies: symlinks that lead out of the folder are not indexed
        cli = [str(python), "-c", "import sys; from turkclip_train.cli import main; code = main(sys.argv[1:]);"
               " print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(code)"]
        indexed = subprocess.run([*cli, "index", str(photos), "--output", f"{tmp}/idx", "--onnx", args.onnx,
                                  "--no-progress"], capture_output=True, text=True, cwd=tmp)
        found = subprocess.run([*cli, "search", f"{tmp}/idx", "kırmızı bir araba", "-k", "3"], capture_output=True,
                               text=True, cwd=tmp)
    torch_there = subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0
    ok = indexed.returncode == found.returncode == 0 and "no torch" in found.stdout and not torch_there
    main_size = _mib(Path(sys.prefix))
    torch_size = _mib(Path(__import__("torch").__file__).parent)
    return (f"Torch-free serve environment (`pip install --no-deps turkclip` + requirements-serve.txt, fresh venv):"
            f" **{size:.0f} MiB** installed; index + search of 20 photos in it with the fp32 export:"
            f" {'ran, without torch' if ok else 'FAILED: ' + (indexed.stderr + found.stderr)[-300:]}. For comparison"
            f" this project's full venv: {main_size:.0f} MiB, of which torch (CPU build) {torch_size:.0f} MiB.")


if __name__ == "__main__":
    main()
