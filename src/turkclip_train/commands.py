"""What each `turkclip` subcommand does, given its parsed flags."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from turkclip import cache
from turkclip.data.captions import read_captions
from turkclip.embedding.embed import resolve_precision
from turkclip.errors import TurkclipError
from turkclip.evaluation.evaluate import evaluate as evaluate_split
from turkclip.evaluation.evaluate import image_embeddings
from turkclip.models.clip import save_clip
from turkclip.roads import load_clip
from turkclip.roads.adapters import load_adapter
from turkclip.roads.text_tower import load_text_tower, swap_text_tower
from turkclip.search.language import trained_language
from turkclip.search.predict import predict as predict_probs

from .config import TrainConfig
from .distributed import default_device, is_main_process, process_group
from .flags import from_args
from .inputs import evaluation_set
from .report import format_table
from .train import train as run_training


def _cache_dir(flag: str | None) -> str | None:
    if flag == "none":
        return None
    return flag or str(cache.default_dir())




def train(args) -> None:
    summary = run_training(from_args(TrainConfig, args))
    if not is_main_process():  # several processes: one of them reports
        return
    if summary["skipped_images"]:
        print(f"skipped {summary['skipped_images']} missing or unreadable images (--skip-bad-images)")
    best = summary["best_val_mean_recall"]
    print(f"{summary['saved_as']} saved to {summary['output']} ({summary['steps']} steps, {summary['seconds']:.0f} s"
          + (f", best val mean recall {best:.2f}" if best is not None else "") + ")")


def evaluate(args) -> None:
    if args.compare and not (args.adapter or args.text_model):
        raise TurkclipError("--compare needs --adapter and/or --text-model")
    if args.adapter and args.text_model and not args.compare:
        raise TurkclipError("--adapter and --text-model are two roads to the same goal; pass --compare to put them side"
                            " by side, or give one")
    with process_group(args.device) as device:  # under torchrun: every process embeds a share, rank 0 reports
        _evaluate(args, device)


def _evaluate(args, device: torch.device) -> None:
    precision = resolve_precision(args.precision, device)
    clip = load_clip(args.model, args.tokenizer)
    data = evaluation_set(args, clip.preprocess, _cache_dir(args.cache_dir))
    english = None
    if args.english_captions:  # its own file: encoding detected, not --encoding
        english = data.with_captions(read_captions(args.english_captions, "en"))

    def run(route, images: torch.Tensor | None = None) -> dict:
        model = route.model.to(device)
        result = evaluate_split(model, route.text, clip.preprocess, data, device, precision, image_emb=images)
        if english is not None:
            result["english"] = evaluate_split(model, route.text, clip.preprocess, english, device, precision,
                                               image_emb=images)
        return result

    # The base and a text tower share the base's image tower: its embeddings are computed once for both.
    images = None
    if args.compare or args.text_model or not args.adapter:
        images = image_embeddings(clip.model.to(device).eval(), data, clip.preprocess, device, precision)
    # Order matters: PEFT writes LoRA layers into the base model it wraps, so the adapter comes last.
    columns = {}
    if args.compare or not (args.adapter or args.text_model):
        columns["base"] = run(clip, images)
    if args.text_model:
        tower, alignment = load_text_tower(args.text_model)
        columns["text tower"] = run(swap_text_tower(clip, tower, alignment, source=args.text_model), images)
    if args.adapter:  # an adapter may change the image tower too: its images are embedded again
        columns["adapter"] = run(replace(clip, model=load_adapter(clip.model, args.adapter)))
    primary = next(reversed(columns))
    result = {**columns[primary], **{k.replace(" ", "_"): v for k, v in columns.items() if k != primary}}
    result.update(split=None if args.shards else args.split, shards=args.shards, model=args.model,
                  adapter=args.adapter, text_model=args.text_model, skipped_images=len(data.skipped))
    if not is_main_process():  # several processes: one of them reports
        return
    print(format_table(columns, primary="turkish" if data.lang == "tr" else data.lang))
    if data.skipped:
        print(f"skipped {len(data.skipped)} missing or unreadable images (--skip-bad-images)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False))
        print(f"metrics written to {args.json}")


def predict(args) -> None:
    from turkclip.search.texts import check_captions

    captions = check_captions(args.captions, args.lang, cased=args.text_model is not None)  # before loading a model
    clip = load_clip(args.model, args.tokenizer, text_model=args.text_model, adapter=args.adapter)
    probs = predict_probs(clip, args.image, captions, args.lang, default_device(args.device))
    width = max(len(c) for c in captions)
    for caption, p in sorted(zip(captions, probs), key=lambda cp: -cp[1]):
        print(f"{p:7.2%}  {caption:<{width}}")


def merge(args) -> None:
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TurkclipError(f"{out} already exists and is not empty; merge writes a new folder (choose another --output)")
    clip = load_clip(args.model, args.tokenizer)
    merged = load_adapter(clip.model, args.adapter).merge_and_unload()
    save_clip(clip, out, merged, lang=args.lang or trained_language(args.adapter) or "tr")
    print(f"merged model written to {out} (load it with CLIPModel.from_pretrained and CLIPProcessor.from_pretrained)")




def demo(args) -> None:
    from turkclip_train.demo.run import run_demo

    run_demo(Path(args.output), seed=args.seed, quick=args.quick, route=args.route)


# ANCHOR text-tower commands (issue 8)
def convert_e5(args) -> None:
    import time

    from turkclip.tools.e5.convert import convert_e5 as convert

    start = time.perf_counter()
    out = convert(args.output, args.source, args.dtype)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"e5-small written to {out} ({size:.0f} MiB, {time.perf_counter() - start:.0f} s): train with"
          f" `turkclip train --text-model {out} ...`; queries need the 'query: ' prefix")


def init_model(args) -> None:
    from turkclip.models.architectures import init_model as build

    build(args.architecture, args.tokenizer, args.output, seed=args.seed)
    print(f"random-init {args.architecture} written to {args.output} (pass --model {args.output}; its retrieval is chance"
          " level until trained)")
