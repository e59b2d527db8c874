"""The markdown report of `train_speed.py`: tables, one-time costs, and the issue's targets, met or not."""

from __future__ import annotations

LABELS = {"seed": "seed notebook loop", "both": "turkclip, both towers", "text": "turkclip, text-only (cached images)",
          "bank": "turkclip, text-only, `--negatives bank`", "raw": "raw forward/backward (the limit)",
          "tower-head": "e5-small text tower, `--text-train head`", "tower-lora": "e5-small text tower, `--text-train lora`",
          "tower-full": "e5-small text tower, `--text-train full`"}
TEXT_ONLY = ("text", "bank")  # and every topN
GROWTH_TOLERANCE = 0.02  # peak RSS may drift this much (allocator noise) before we call it growth


def render(args, machine: dict, results: list[dict]) -> str:
    ok = [r for r in results if "error" not in r]
    prep = next((r for r in ok if r["mode"] == "prepare"), {})
    n = prep.get("images") or next((r["epoch_pairs"] for r in ok if r["mode"] in ("both", "raw", "text")), 0)
    seed = next((r for r in ok if r["mode"] == "seed"), None)
    train = [r for r in ok if r["mode"] in LABELS or _top(r["mode"])]
    lines = [f"## {machine['date']} · {args.arch} · {n} train images · {args.device}", ""]
    lines += _machine(machine, args)
    lines += ["", "### Training", "",
              f"| mode | precision | LoRA dropout | pairs/s | × seed | epoch of {n} pairs | steps timed |"
              " RSS before steps | peak RSS in steps |",
              "|---|---|---|---:|---:|---:|---|---:|---:|"]
    for r in train:
        lines.append(_row(r, seed, n))
    failed = [r for r in results if "error" in r]
    if failed:
        lines += [""] + [f"- {r['mode']} {r['precision']} dropout {r['dropout']} FAILED: `{r['error']}`"
                         for r in failed]
    lines += ["", "### One-time costs", ""] + _one_time(prep, ok, n)
    lines += ["", "### Targets (issues 5 and 10)", ""] + _targets(ok, seed, n)
    evals = [r for r in ok if r["mode"] == "eval"]
    if evals:
        lines += ["", "### Evaluation: images embedded per second"
                  f" (LoRA model, eval mode, best of {args.eval_repeats})", "",
                  "| precision | images | `embed_images` (uint8 → normalise → tower) | raw `get_image_features`"
                  " (pre-made tensors) | ratio |", "|---|---:|---:|---:|---:|"]
        for r in evals:
            lines.append(f"| {r['precision']} | {r['images']} | {r['product_images_per_s']:.1f} |"
                         f" {r['raw_images_per_s']:.1f} | {r['product_images_per_s'] / r['raw_images_per_s']:.2f} |")
    growth = next((r for r in ok if r["mode"] == "growth"), None)
    if growth:
        lines += ["", _growth_title(args, growth), ""] + _growth(growth)
    return "\n".join(lines) + "\n"


def _machine(m: dict, args) -> list[str]:
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ""
    steps = f"{args.steps} steps after {args.warmup} warm-up step(s)" if args.steps else "whole epochs"
    return [
        f"Machine: {m['cpu']}, {m['cores']} cores (torch uses {m['threads']} threads), {m['ram_gib']:.1f} GiB RAM{gpu};"
        f" Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}."
        f" turkclip's `--precision auto` picks {m['auto_precision']} here.",
        f"Load average (1 min): {m['load_start']:.1f} at start, {m['load_end']:.1f} at end"
        f"{' (busy: other work slowed these numbers)' if max(m['load_start'], m['load_end']) > m['cores'] else ''}."
        f" Whole run: {m['seconds'] / 60:.1f} min.",
        "",
        f"Method: every mode runs in its own process on the same data and the same random-init model. Timed: {steps}"
        f"{' in CPU seconds of the process (`--clock cpu`: all times below are CPU time, not wall time)' if args.clock == 'cpu' else ''};"
        " pairs/s counts only the timed steps and the epoch times are extrapolated from it, except where marked"
        " *measured* (the text-only modes always run a whole epoch). An epoch shows each image once with one random"
        " caption, in turkclip as in the seed notebook (its `Image_dataset` draws the caption in `__getitem__`), so"
        " the loops are compared per pair and epoch to epoch on the same number of pairs."
        " Peak RSS is the process's high-water mark from the first training step on (setup excluded).",
    ]


def _top(mode: str) -> int | None:
    """N of a `topN` mode (text-only, LoRA in the top N text layers), else None."""
    return int(mode[3:]) if mode.startswith("top") and mode[3:].isdigit() else None


def _label(mode: str) -> str:
    return f"turkclip, text-only, LoRA in the top {_top(mode)} text layers" if _top(mode) else LABELS[mode]


def _text_only(mode: str) -> bool:
    return mode in TEXT_ONLY or _top(mode) is not None


def _mib(x) -> str:
    return f"{x:.0f} MiB" if x is not None else "–"


def _row(r: dict, seed: dict | None, n: int) -> str:
    rate = r["pairs_per_s"]
    vs_seed = f"{rate / seed['pairs_per_s']:.2f}" if seed else "–"
    epoch = f"{n / rate:.1f} s"
    timed = f"{r['timed_steps']}, extrapolated"
    if "measured_epoch_s" in r:
        epoch = f"{r['measured_epoch_s']:.1f} s *measured*"
        timed = f"whole epoch ({r['epochs'][0]['steps']} steps)"
    if r["mode"] == "seed" and r["epoch_pairs"] != n:
        epoch += f" (its own epoch, {r['epoch_pairs']} pairs: {r['epoch_pairs'] / rate:.1f} s)"
    return (f"| {_label(r['mode'])} | {r['precision']} | {r['dropout']} | {rate:.2f} | {vs_seed} | {epoch} | {timed} |"
            f" {_mib(r['before']['rss_mb'])} | {_mib(r['steps']['peak_rss_mb'])} |")


def _embeddings_s(ok: list[dict], precision: str) -> float | None:
    """Seconds the cached image embeddings took where they were computed (not read back) at `precision`."""
    return next((r["one_time"]["image_embeddings_s"] for r in ok if r["precision"] == precision
                 and r.get("one_time", {}).get("image_embeddings_computed")), None)


def _one_time(prep: dict, ok: list[dict], n: int) -> list[str]:
    out = []
    if "init_model_s" in prep:
        out.append(f"- building the random-init model: {prep['init_model_s']:.1f} s (once per work folder)")
    if prep:
        out.append(f"- decoding {prep['images']} images into the pixel cache ({prep['pixels_mb']:.0f} MiB uint8):"
                   f" {prep['decode_images_s']:.1f} s — once per image set and image size; every later epoch and run"
                   " reads the cache (the seed loop decodes every image in every epoch)")
    for precision in sorted({r["precision"] for r in ok if _text_only(r["mode"])}):
        computed = _embeddings_s(ok, precision)
        hits = [r["one_time"]["image_embeddings_s"] for r in ok if r["precision"] == precision
                and _text_only(r["mode"]) and not r["one_time"].get("image_embeddings_computed")]
        if computed is not None:
            hit = f"; read back from the cache in {min(hits):.2f} s" if hits else ""
            out.append(f"- cached image embeddings of {n} images, {precision}: {computed:.1f} s — paid once per base"
                       f" model, image set and precision{hit}")
    prefixes = [f"{r['mode']} {r['precision']} {r['dropout']}: {r['one_time']['text_prefix_s']:.1f} s" for r in ok
                if _text_only(r["mode"]) and "text_prefix_s" in r.get("one_time", {})]
    if prefixes:
        out.append("- the text path, chosen and prepared in `train()` (for the remembered-prefix path: the frozen lower"
                   " text layers run once over every train caption; part of the setup below): " + "; ".join(prefixes))
    setups = [f"{r['mode']} {r['precision']} {r['dropout']}: {r['one_time']['setup_s']:.1f} s" for r in ok
              if "setup_s" in r.get("one_time", {})]
    if setups:
        out.append("- `train()` start to first step (accelerator, model, pixels, LoRA, embeddings): "
                   + "; ".join(setups))
    return out


def _verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def _targets(ok: list[dict], seed: dict | None, n: int) -> list[str]:
    by = {(r["mode"], r["precision"], r["dropout"]): r for r in ok}
    out = [_vs_seed(m, p, d, r, seed, n, ok) for (m, p, d), r in by.items() if seed and (m == "both" or _text_only(m))]
    for (m, p, d), r in by.items():
        raw = by.get(("raw", p, d))
        if m == "both" and raw:
            over = raw["pairs_per_s"] / r["pairs_per_s"] - 1
            out.append(f"- both-tower within 15% of the raw forward/backward — {p}, dropout {d}: {over:+.1%} time"
                       f" ({_verdict(over <= 0.15)})")
    for r in ok:
        if r["mode"] == "eval":
            x = r["product_images_per_s"] / r["raw_images_per_s"]
            out.append(f"- evaluation ≥ 90% of the raw forward's throughput — {r['precision']}: {x:.0%}"
                       f" ({_verdict(x >= 0.9)})")
    for (m, p, d), r in by.items():
        if m == "both":
            out.append(f"- peak memory of a batch-{r['timed_pairs'] // max(r['timed_steps'], 1)} both-tower step —"
                       f" {p}, dropout {d}: {_mib(r['steps']['peak_rss_mb'])} RSS (before the first step:"
                       f" {_mib(r['before']['rss_mb'])}; setup's peak {_mib(r['setup_peak_rss_mb'])})")
    growth = next((r for r in ok if r["mode"] == "growth"), None)
    if growth:
        grew, text = _growth_change(growth)
        out.append(f"- no memory growth across epochs: {text} ({_verdict(not grew)})")
    return out


def _vs_seed(mode: str, precision: str, dropout: float, r: dict, seed: dict, n: int, ok: list[dict]) -> str:
    """Speed-up over the seed loop per pair and epoch to epoch (each loop's own epoch, both one caption per
    image). Text-only must reach 10× (issue 10: per pair, at the seed's settings), both towers must be faster;
    issue 10's 15× (the fastest settings within 1 point of R@1) needs the demo world's R@1 and is judged in
    RESULTS.md, not here."""
    target = 1 if mode == "both" else 10
    met = (lambda x: x > 1) if target == 1 else (lambda x: x >= target)
    per_pair = r["pairs_per_s"] / seed["pairs_per_s"]
    seed_epoch = seed["epoch_pairs"] / seed["pairs_per_s"]
    epoch = r.get("measured_epoch_s", n / r["pairs_per_s"])
    goal = "faster than" if target == 1 else "≥ 10× faster than"
    line = (f"- {mode} {goal} the seed loop — {precision}, dropout {dropout}: per pair {per_pair:.2f}×"
            f" ({_verdict(met(per_pair))}); epoch to epoch ({seed['epoch_pairs']} vs {n} pairs)"
            f" {seed_epoch / epoch:.2f}× ({_verdict(met(seed_epoch / epoch))})")
    emb = _embeddings_s(ok, precision) if mode != "both" else None
    if emb:
        line += f"; a first epoch that also computes the image embeddings: {seed_epoch / (epoch + emb):.2f}×"
    return line


def _growth_title(args, r: dict) -> str:
    return (f"### Memory across epochs: both towers, {r['precision']}, first {args.growth_images} train images"
            f" + 32 val images, validation and saving every epoch, through `train()`")


def _growth_change(r: dict) -> tuple[bool, str]:
    epochs = r["epochs"]
    if len(epochs) < 2:
        return False, "needs 2+ epochs"
    first, last = epochs[0]["peak_rss_mb"], epochs[-1]["peak_rss_mb"]
    rss = epochs[-1]["rss_mb"] - epochs[1]["rss_mb"]
    grew = last - first > GROWTH_TOLERANCE * first or rss > GROWTH_TOLERANCE * epochs[1]["rss_mb"]
    return grew, (f"peak RSS after epoch 1 {first:.0f} MiB, after epoch {len(epochs)} {last:.0f} MiB"
                  f" ({(last - first) / first:+.1%}); RSS at the end of epoch 2 → {len(epochs)}: {rss:+.0f} MiB")


def _growth(r: dict) -> list[str]:
    lines = ["| epoch | steps | steps' time | end-of-epoch work (validation, saving) | RSS at end | peak RSS so far |",
             "|---:|---:|---:|---:|---:|---:|"]
    for i, e in enumerate(r["epochs"], 1):
        lines.append(f"| {i} | {e['steps']} | {e['seconds']:.1f} s | {e.get('end_work_s', float('nan')):.1f} s |"
                     f" {_mib(e.get('rss_mb'))} | {_mib(e.get('peak_rss_mb'))} |")
    grew, text = _growth_change(r)
    return lines + ["", f"{'Grows' if grew else 'No growth'} (tolerance {GROWTH_TOLERANCE:.0%}): {text}."]
