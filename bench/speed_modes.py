"""The measurements behind `train_speed.py`, one function per mode; each runs in its own process.

* `seed`   the seed notebook's loop, re-created plainly in `seed_loop.py`.
* `both`, `text`, `bank`   turkclip's own training loop: the real `turkclip_train.train.train()`,
           watched through its progress bar and its per-epoch `epoch_batches` call (see `Probe`).
* `topN`   `text` with `--lora-layers N` (LoRA in the top N text layers; the lower ones run once per caption).
           N = the tower's depth (12) is the remembered-prefix path at every layer, against `text`'s `FullText`.
* `raw`    the limit: the same LoRA model on pre-made tensors, loss + backward + optimizer step only.
* `eval`   `turkclip.embedding.embed.embed_images` against `get_image_features` on pre-made tensors.
* `growth` several epochs of `train()` (both towers, with validation): RSS at the end of each epoch.
* `prepare` the one-time costs: building the random-init model, decoding the images into the pixel cache.

Every mode returns a dict of plain numbers; the driver prints and records them.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from measure import memory, peak_rss_mb, rate, reset_peak, sync, train_captions
from seed_loop import seed

TOKENIZER = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "clip-tokenizer"


# --- turkclip's loop, through train() -----------------------------------------------------------------------

class Stop(Exception):
    """Raised from the progress bar once enough steps were timed."""


class Probe:
    """Watches `train()` from the outside, without changing it.

    `train()` calls `epoch_batches` once to count the steps, then once at the start of every epoch,
    and updates its progress bar once per optimizer step. Timing the gaps between those calls gives
    each step's wall time (data, forward, backward, clip, optimizer, logging) and keeps the
    end-of-epoch work (saving, validation) out of them.
    """

    def __init__(self, device: torch.device, stop_after: int | None):
        self.device, self.stop_after = device, stop_after
        self.durations, self.pairs, self.epochs, self.one_time = [], [], [], {}
        self.sizes, self.mark, self.started, self.setup_peak = [], 0.0, None, None

    def epoch_batches(self, real):
        def wrapper(*a, **kw):
            batches = real(*a, **kw)
            now = time.perf_counter()
            if self.started is None:  # the first call only counts the steps
                self.started = now
            else:  # an epoch begins: the previous one (and its saving/validation) is over
                if not self.epochs:  # first epoch: setup is over; measure the loop's own peak from here
                    self.one_time["setup_s"] = now - self.t0
                    self.setup_peak, self.before = peak_rss_mb(), memory(self.device)
                    reset_peak()
                else:
                    self.epochs[-1]["end_work_s"] = now - self.mark
                    self.epochs[-1].update(memory(self.device))
                self.epochs.append({"start": now, "steps": 0})
            self.sizes, self.mark = [len(b) for b in batches], now
            return batches
        return wrapper

    def bar(self, *a, **kw):
        return self

    def update(self, n: int = 1):
        sync(self.device)
        now = time.perf_counter()
        epoch = self.epochs[-1]
        self.durations.append(now - self.mark)
        self.pairs.append(self.sizes[epoch["steps"]])
        epoch["steps"] += 1
        epoch["seconds"] = now - epoch["start"]
        self.mark = now
        if self.stop_after is not None and len(self.durations) >= self.stop_after:
            raise Stop

    def set_postfix(self, **kw):
        pass

    def write(self, *a, **kw):
        pass

    def close(self):  # train() closes its bar when the loop is over, before the curves and the summary
        if self.epochs and "end_work_s" not in self.epochs[-1]:
            self.epochs[-1]["end_work_s"] = time.perf_counter() - self.mark
            self.epochs[-1].update(memory(self.device))

    def timed(self, name: str, real, cache_dir: Path | None = None):
        """`real`, with its seconds added up under `name` (and, given the cache, whether it computed anything)."""
        def wrapper(*a, **kw):
            before = len(list(cache_dir.glob("image-embeds-*"))) if cache_dir else 0
            t = time.perf_counter()
            out = real(*a, **kw)
            self.one_time[f"{name}_s"] = self.one_time.get(f"{name}_s", 0.0) + time.perf_counter() - t
            if cache_dir and len(list(cache_dir.glob("image-embeds-*"))) > before:
                self.one_time[f"{name}_computed"] = True
            return out
        return wrapper

    def run(self, cfg):
        import turkclip_train.train as T

        cache_dir = Path(cfg.cache_dir)
        patches = [mock.patch.object(T, "_text_path", self.timed("text_prefix", T._text_path)),mock.patch.object(T, "tqdm", self.bar),
                   mock.patch.object(T, "epoch_batches", self.epoch_batches(T.epoch_batches)),
                   mock.patch.object(T, "load_clip", self.timed("load_model", T.load_clip)),
                   mock.patch.object(T, "load_image_text_set", self.timed("load_pixels", T.load_image_text_set)),
                   mock.patch.object(T, "cached_image_embeddings",
                                     self.timed("image_embeddings", T.cached_image_embeddings, cache_dir))]
        for p in patches:
            p.start()
        self.t0 = time.perf_counter()
        try:
            T.train(cfg)
        except Stop:
            pass
        finally:
            for p in patches:
                p.stop()
        if not self.durations:
            raise RuntimeError("train() ran no step the probe could see: has its loop changed?")


def steps_per_epoch(captions: str, batch_size: int) -> int:
    from turkclip.data.sampling import epoch_batches

    return len(epoch_batches([caps for _, caps in train_captions(captions)], "tr", batch_size, 0, 0))


def product(args, towers: str, negatives: str = "batch", full_epoch: bool = False, val: bool = False,
            epochs: int | None = None, text_train: str | None = None, layers: int | None = None) -> dict:
    """turkclip's training loop (`train()`), timed by `Probe`."""
    from turkclip.roads.settings import LoraSettings
    from turkclip_train.config import TrainConfig

    spe = steps_per_epoch(args.captions, args.batch_size)
    stop_after, full = None, full_epoch or not args.steps
    if epochs is None:  # a whole epoch when asked (or --steps 0), else warm-up + --steps steps
        if full and spe > args.warmup:
            epochs = 1
        else:
            stop_after = args.warmup + (spe if full else args.steps)
            epochs = math.ceil(stop_after / spe)
    out = Path(tempfile.mkdtemp(prefix=f"{args.mode}-", dir=args.workdir))
    cfg = TrainConfig(captions=args.captions, images=args.image_dir, output=str(out), model=args.model_dir,
                      val_split="val" if val else None, epochs=epochs, batch_size=args.batch_size,
                      lora=LoraSettings(dropout=args.dropout, towers=towers, layers=layers), negatives=negatives,
                      precision=args.precision, cache_dir=args.cache_dir, progress=False,
                      text_model=args.text_model if text_train else None, text_train=text_train or "lora")
    probe = Probe(torch.device(args.device), stop_after)
    try:
        probe.run(cfg)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    first = probe.epochs[0]
    result = {**rate(probe.durations, probe.pairs, args.warmup), "epoch_pairs": len(train_captions(args.captions)),
              "one_time": probe.one_time, "before": probe.before, "setup_peak_rss_mb": probe.setup_peak,
              "steps": memory(probe.device),
              "epochs": [{k: v for k, v in e.items() if k != "start"} for e in probe.epochs]}
    if full and first["steps"] == spe:  # a whole epoch ran: its measured time, every step included
        result["measured_epoch_s"] = first["seconds"]
    return result


# --- raw: the model alone on pre-made tensors ---------------------------------------------------------------

def typical_batch(clip, captions: str, images: str, batch_size: int, cache_dir: str):
    """The full epoch-0 batch whose padded caption length is the median one: its tokens and its pixels."""
    from turkclip.data.captions import read_captions
    from turkclip.data.dataset import load_image_text_set
    from turkclip.data.sampling import epoch_batches

    data = load_image_text_set(read_captions(captions, "tr").split("train"), images, clip.preprocess,
                               cache_dir=Path(cache_dir))
    batches = epoch_batches(data.captions, data.lang, batch_size, 0, 0)
    batches = [b for b in batches if len(b) == len(batches[0])]
    tokens = [clip.text([it.text for it in b], "tr") for b in batches]
    order = sorted(range(len(batches)), key=lambda i: tokens[i]["input_ids"].shape[1])
    pick = order[len(order) // 2]
    return tokens[pick], data.pixels[torch.tensor([it.image for it in batches[pick]])]


def raw(args) -> dict:
    from turkclip.embedding.embed import autocast, features
    from turkclip.roads import load_clip
    from turkclip.roads.adapters import attach_lora
    from turkclip.roads.loss import clip_loss
    from turkclip.roads.settings import LoraSettings

    device = torch.device(args.device)
    torch.manual_seed(0)
    clip = load_clip(args.model_dir)
    tokens, pixels = typical_batch(clip, args.captions, args.image_dir, args.batch_size, args.cache_dir)
    tokens = {k: v.to(device) for k, v in tokens.items()}
    pixel_values = clip.preprocess.normalize(pixels).to(device)
    model = attach_lora(clip.model, LoraSettings(dropout=args.dropout)).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)

    before = memory(device)
    reset_peak()
    durations = []
    spe = steps_per_epoch(args.captions, args.batch_size)
    for _ in range(args.warmup + args.steps if args.steps else max(spe, args.warmup + 1)):
        start = time.perf_counter()
        with autocast(device, args.precision):
            text = features(model.get_text_features(**tokens))
            image = features(model.get_image_features(pixel_values=pixel_values))
            loss = clip_loss(text.float(), image.float(), model.logit_scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        durations.append(time.perf_counter() - start)
    n = len(tokens["input_ids"])
    return {**rate(durations, [n] * len(durations), args.warmup), "epoch_pairs": len(train_captions(args.captions)),
            "text_length": tokens["input_ids"].shape[1], "before": before, "steps": memory(device)}


# --- eval: embedding images ---------------------------------------------------------------------------------

def evaluation(args) -> dict:
    from turkclip.data.captions import read_captions
    from turkclip.data.dataset import load_image_text_set
    from turkclip.embedding.embed import autocast, embed_images
    from turkclip.roads import load_clip
    from turkclip.roads.adapters import attach_lora
    from turkclip.roads.settings import LoraSettings

    device = torch.device(args.device)
    clip = load_clip(args.model_dir)
    data = load_image_text_set(read_captions(args.captions, "tr").split("train"), args.image_dir, clip.preprocess,
                               cache_dir=Path(args.cache_dir))
    pixels = data.pixels[: args.eval_images]
    model = attach_lora(clip.model, LoraSettings()).to(device).eval()  # what `evaluate --adapter` runs
    batch = 256  # embed_images' default
    premade = [clip.preprocess.normalize(pixels[s : s + batch]).to(device) for s in range(0, len(pixels), batch)]

    def product_pass():
        embed_images(model, pixels, clip.preprocess, device, args.precision, progress=False)

    @torch.inference_mode()
    def raw_pass():
        with autocast(device, args.precision):
            for b in premade:
                model.get_image_features(pixel_values=b)

    embed_images(model, pixels[:8], clip.preprocess, device, args.precision, progress=False)  # warm-up
    times = {"product": [], "raw": []}
    for _ in range(args.eval_repeats):  # interleaved, best of each: fair to both on a noisy machine
        for name, fn in (("raw", raw_pass), ("product", product_pass)):
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    n = len(pixels)
    return {"images": n, "product_images_per_s": n / min(times["product"]), "raw_images_per_s": n / min(times["raw"]),
            "times": times, "steps": memory(device)}


# --- growth and prepare -------------------------------------------------------------------------------------

def growth(args) -> dict:
    """Both towers through `train()` for several epochs, with validation: RSS after every epoch."""
    result = product(args, "both", val=True, epochs=args.growth_epochs)
    return {"epochs": result["epochs"], "before": result["before"], "steps": result["steps"],
            "setup_peak_rss_mb": result["setup_peak_rss_mb"]}


def prepare(args) -> dict:
    """One-time costs: the random-init model (kept in the work folder between runs) and the pixel cache."""
    from turkclip.data.captions import read_captions
    from turkclip.data.dataset import load_image_text_set
    from turkclip.models.architectures import init_model
    from turkclip.roads import load_clip

    out = {}
    if not (Path(args.model_dir) / "config.json").is_file():
        start = time.perf_counter()
        init_model(args.arch, TOKENIZER, args.model_dir, seed=0)
        out["init_model_s"] = time.perf_counter() - start
    clip = load_clip(args.model_dir)
    start = time.perf_counter()
    data = load_image_text_set(read_captions(args.captions, "tr").split("train"), args.image_dir, clip.preprocess,
                               cache_dir=Path(args.cache_dir))
    out.update(decode_images_s=time.perf_counter() - start, images=len(data),
               pixels_mb=len(data.pixels) * 3 * data.pixels.shape[-1] ** 2 / 2**20)
    return out


MODES = {
    "prepare": prepare,
    "seed": seed,
    "both": lambda args: product(args, "both"),
    "text": lambda args: product(args, "text", full_epoch=True),
    "bank": lambda args: product(args, "text", "bank", full_epoch=True),
    # the second road: CLIP's text tower swapped for e5-small (--text-model), image embeddings cached
    "tower-head": lambda args: product(args, "text", full_epoch=True, text_train="head"),
    "tower-lora": lambda args: product(args, "text", full_epoch=True, text_train="lora"),
    "tower-full": lambda args: product(args, "text", full_epoch=True, text_train="full"),
    "raw": raw,
    "eval": evaluation,
    "growth": growth,
}


def run_mode(args) -> dict:
    os.makedirs(args.workdir, exist_ok=True)
    if args.mode.startswith("top"):  # topN: text-only, LoRA in the top N text layers
        return product(args, "text", full_epoch=True, layers=int(args.mode[3:]))
    return MODES[args.mode](args)
