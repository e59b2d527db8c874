"""What each `turkclip` subcommand does, given its parsed flags."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from turkclip import cache
from turkclip.adapters import LoraSettings, load_adapter
from turkclip.data.augment import parse_policy
from turkclip.data.captions import read_captions
from turkclip.data.dataset import load_image_text_set
from turkclip.embed import resolve_precision
from turkclip.errors import TurkclipError
from turkclip.evaluate import evaluate as evaluate_split
from turkclip.model import load_clip, save_clip
from turkclip.predict import predict as predict_probs

from .report import format_table
from .train import TrainConfig, train as run_training


def _cache_dir(flag: str | None) -> str | None:
    if flag == "none":
        return None
    return flag or str(cache.default_dir())


def _device(flag: str | None) -> torch.device:
    return torch.device(flag or ("cuda" if torch.cuda.is_available() else "cpu"))


def train(args) -> None:
    lora = LoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                        targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
                        towers=args.lora_towers)
    cfg = TrainConfig(
        captions=args.captions, images=args.images, output=args.output, model=args.model, tokenizer=args.tokenizer,
        lang=args.lang, encoding=args.encoding, image_column=args.image_column, caption_column=args.caption_column,
        split_column=args.split_column, train_split=args.train_split, val_split=args.val_split,
        rehearsal_captions=args.rehearsal_captions, rehearsal_lang=args.rehearsal_lang,
        rehearsal_ratio=args.rehearsal_ratio, epochs=args.epochs, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        clip_grad=args.clip_grad, lora=lora, train_token_rows=args.train_token_rows, negatives=args.negatives,
        precision=args.precision, compile=args.compile, seed=args.seed, skip_bad_images=args.skip_bad_images,
        cache_dir=_cache_dir(args.cache_dir), resume=args.resume, checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress, augment=str(parse_policy(args.augment, args.crop_scale)),
        augment_views=args.augment_views,
    )
    summary = run_training(cfg)
    if summary["skipped_images"]:
        print(f"skipped {summary['skipped_images']} missing or unreadable images (--skip-bad-images)")
    best = summary["best_val_mean_recall"]
    print(f"adapter saved to {summary['output']} ({summary['steps']} steps, {summary['seconds']:.0f} s"
          + (f", best val mean recall {best:.2f}" if best is not None else "") + ")")


def evaluate(args) -> None:
    if args.compare and not args.adapter:
        raise TurkclipError("--compare needs --adapter")
    device = _device(args.device)
    precision = resolve_precision(args.precision, device)
    clip = load_clip(args.model, args.tokenizer)
    captions = read_captions(args.captions, args.lang, args.encoding, args.image_column, args.caption_column,
                             args.split_column).split(args.split)
    data = load_image_text_set(captions, args.images, clip.preprocess, args.skip_bad_images, _cache_dir(args.cache_dir))
    english = None
    if args.english_captions:  # its own file: encoding detected, not --encoding
        english = data.with_captions(read_captions(args.english_captions, "en"))

    def run(model) -> dict:
        result = evaluate_split(model, clip.text, clip.preprocess, data, device, precision)
        if english is not None:
            result["english"] = evaluate_split(model, clip.text, clip.preprocess, english, device, precision)
        return result

    model = clip.model.to(device)
    columns = {}
    if args.adapter:
        model = load_adapter(model, args.adapter).to(device)
        if args.compare:
            with model.disable_adapter():
                columns["base"] = run(model)
        columns["adapter"] = result = run(model)
    else:
        columns["base"] = result = run(model)
    if args.compare:
        result = {**columns["adapter"], "base": columns["base"]}
    result.update(split=args.split, model=args.model, adapter=args.adapter, skipped_images=len(data.skipped))
    print(format_table(columns, primary="turkish" if data.lang == "tr" else data.lang))
    if data.skipped:
        print(f"skipped {len(data.skipped)} missing or unreadable images (--skip-bad-images)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False))
        print(f"metrics written to {args.json}")


def predict(args) -> None:
    clip = load_clip(args.model, args.tokenizer)
    if args.adapter:
        clip.model = load_adapter(clip.model, args.adapter)
    probs = predict_probs(clip, args.image, args.captions, args.lang, _device(args.device))
    width = max(len(c) for c in args.captions)
    for caption, p in sorted(zip(args.captions, probs), key=lambda cp: -cp[1]):
        print(f"{p:7.2%}  {caption:<{width}}")


def merge(args) -> None:
    clip = load_clip(args.model, args.tokenizer)
    merged = load_adapter(clip.model, args.adapter).merge_and_unload()
    save_clip(clip, args.output, merged)
    print(f"merged model written to {args.output} (load it with CLIPModel.from_pretrained)")


def demo(args) -> None:
    from .demo.run import run_demo

    run_demo(Path(args.output), seed=args.seed, quick=args.quick)


# ANCHOR text-tower commands (issue 8)


# ANCHOR photo commands (issue 9)


# ANCHOR model tools (issue 9)
