"""What the integrity checks of issue 16 cost: the code before them (main at --base) and this tree's, side by side,
interleaved in one run.

1. Opening a photo index (`open_index`) of N synthetic photos (float16, 512 wide): the old reader on a file the
   old writer wrote, against the new one (two SHA-256 checksums, the shape and finiteness checks).
2. Saving and loading a training checkpoint whose trainable tensors and AdamW state total S MB: the old
   `checkpoint.save`/`load` against the new ones (the seal: one more read of the file on each side).
3. `run_settings` at the start of a run whose --model is a local folder of M MB and whose --captions is
   TasvirEt's file (../shared): the old one (names only) against the new one (both hashed by content).

The old modules are read from git (`git show BASE:path`) and imported beside this tree's.

    nice -n 5 python bench/integrity_bench.py                      # 100k photos, 600 MB checkpoint, 600 MB model
    python bench/integrity_bench.py --photos 10000 --checkpoint-mb 50 --model-mb 50 --repeats 3   # quick
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
TASVIRET = ROOT.parent / "shared" / "data" / "tasviret" / "tasviret8k_captions.json"


def old_module(base: str, path: str, name: str, work: Path):
    """The module at `path` as it was at git revision `base`, imported under `name`."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{base}:{path}"], check=True, capture_output=True,
                            text=True).stdout
    file = work / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(cases: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each case, the cases taking turns in every round."""
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def index_cases(old_pi, work: Path, n: int) -> dict:
    import torch

    from turkclip.search import photo_index as new_pi

    emb = torch.nn.functional.normalize(torch.randn(n, 512), dim=-1).half()
    rows = [f"album-{i // 1000:04d}/IMG_{i:07d}.jpg" for i in range(n)]
    entries = {p: ((100_000 + i, 1_700_000_000_000_000_000 + i), emb[i]) for i, p in enumerate(rows)}
    meta = {"format": "turkclip-photo-index", "root": str(work / "photos"), "model": "openai/clip-vit-base-patch32",
            "adapter": None, "text_model": None, "tokenizer": None, "precision": "fp32", "generation": 1, "bad": []}
    old_dir, new_dir = work / "old-index", work / "new-index"
    old_pi._write_index(old_dir, rows, entries, dict(meta, version=old_pi.VERSION))
    new_pi._write_index(new_dir, rows, entries, dict(meta, version=new_pi.VERSION))
    assert new_pi.open_index(new_dir).paths == old_pi.open_index(old_dir).paths
    return {"old open_index": lambda: old_pi.open_index(old_dir), "new open_index": lambda: new_pi.open_index(new_dir)}


def checkpoint_cases(old_cp, work: Path, megabytes: int) -> dict:
    import torch

    from turkclip_train import checkpoint as new_cp

    params = megabytes * 2**20 // 4 // 3  # the weights and AdamW's two moments
    model = torch.nn.Linear(params // 1024, 1024, bias=False)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, model.in_features)).sum().backward()
    optimizer.step()
    position = {"epoch": 0, "step": 1, "global_step": 1}
    old_dir, new_dir = work / "old-run", work / "new-run"
    return {
        "old checkpoint.save": lambda: old_cp.save(old_dir, model, optimizer, scheduler, position),
        "new checkpoint.save": lambda: new_cp.save(new_dir, model, optimizer, scheduler, position),
        "old checkpoint.load": lambda: old_cp.load(old_dir, model, optimizer, scheduler),
        "new checkpoint.load": lambda: new_cp.load(new_dir, model, optimizer, scheduler),
    }


def settings_cases(old_cp, work: Path, megabytes: int) -> dict:
    from turkclip_train import checkpoint as new_cp
    from turkclip_train.train import TrainConfig

    model = work / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "clip"}')
    with (model / "model.safetensors").open("wb") as f:
        for _ in range(megabytes):
            f.write(os.urandom(2**20))
    cfg = TrainConfig(captions=str(TASVIRET), images=str(work), output=str(work / "out"), model=str(model))
    return {"old run_settings": lambda: old_cp.run_settings(cfg, 1), "new run_settings": lambda: new_cp.run_settings(cfg, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main", help="git revision of the old code (default main)")
    p.add_argument("--photos", type=int, default=100_000)
    p.add_argument("--checkpoint-mb", type=int, default=600)
    p.add_argument("--model-mb", type=int, default=600)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="integrity-bench-"))
    start_load = os.getloadavg()[0]
    old_pi = old_module(args.base, "src/turkclip/search/photo_index.py", "old_photo_index", work)
    old_cp = old_module(args.base, "src/turkclip_train/checkpoint.py", "old_checkpoint", work)
    rows = []
    for what, cases in ((f"open an index of {args.photos:,} photos", index_cases(old_pi, work, args.photos)),
                        (f"checkpoint of {args.checkpoint_mb} MB", checkpoint_cases(old_cp, work, args.checkpoint_mb)),
                        (f"run settings, {args.model_mb} MB model folder + TasvirEt captions",
                         settings_cases(old_cp, work, args.model_mb))):
        medians = interleaved(cases, args.repeats)
        for name, seconds in medians.items():
            rows.append((what, name, seconds))

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python"
          f" {platform.python_version()}, torch {torch.__version__}. Load average (1 min): {start_load:.1f} at start,"
          f" {os.getloadavg()[0]:.1f} at end. Median of {args.repeats} interleaved rounds; old = {args.base}.\n")
    print("| what | code | seconds |\n|---|---|---:|")
    for what, name, seconds in rows:
        print(f"| {what} | {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
