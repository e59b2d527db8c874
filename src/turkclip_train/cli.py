"""`turkclip` command line: train, evaluate, predict, merge, demo.

Each subcommand parses flags into the library's settings and calls one function; user
errors (`TurkclipError`) print as one line on stderr with exit status 1 (`--debug` shows
the traceback), Ctrl-C during training checkpoints and exits with 130.
"""

from __future__ import annotations

import argparse
import sys
import traceback

# Nothing from `turkclip` is imported up here: it pulls in torch, transformers and peft (seconds),
# and `--help` should be instant. tests/test_cli.py checks this stays equal to turkclip.model's.
DEFAULT_MODEL = "openai/clip-vit-base-patch32"
SEED_RECIPE = "defaults reproduce the seed notebook: r=16, alpha=16, q_proj+v_proj in both towers, dropout 0.1, lr 1e-4, batch 64, 5 epochs"


def _model_flags(p: argparse.ArgumentParser, adapter: bool) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"base CLIP: hub id or local folder (default {DEFAULT_MODEL})")
    p.add_argument("--tokenizer", help="tokenizer folder, if the model folder has none")
    if adapter:
        p.add_argument("--adapter", help="LoRA adapter folder written by `turkclip train`")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--captions", required=True,
                   help="captions file: Karpathy JSON (TasvirEt), CSV/TSV/JSONL (image,caption[,split]) or Flickr8k.token.txt")
    p.add_argument("--images", required=True, help="folder the captions' image file names are relative to")
    p.add_argument("--lang", default="tr", help="language of --captions (tr folds İ/I the Turkish way; default tr)")
    p.add_argument("--encoding", help="text encoding of the captions file (default: UTF-8, BOMs detected)")
    p.add_argument("--image-column", default="image", help="CSV/JSONL column with the image file name")
    p.add_argument("--caption-column", default="caption", help="CSV/JSONL column with the caption")
    p.add_argument("--split-column", default="split", help="CSV/JSONL column with the split, if any")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out missing or unreadable images (counted and reported) instead of stopping")
    p.add_argument("--cache-dir", default=None, help="where decoded pixels and frozen image embeddings are cached"
                   " (default ~/.cache/turkclip or $TURKCLIP_CACHE; 'none' disables)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 where the GPU/CPU runs it natively, else fp32")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turkclip", description="Teach CLIP a new language (Turkish first) with LoRA adapters.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a LoRA adapter", description=f"Train a LoRA adapter on the train split, "
                       f"validating on val each epoch and keeping the best adapter in --output. {SEED_RECIPE}.")
    _model_flags(t, adapter=False)
    _data_flags(t)
    t.add_argument("--output", required=True, help="folder for the adapter, checkpoint, metrics.jsonl and curves.png")
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
    t.add_argument("--train-split", default="train", help="split to train on (default train)")
    t.add_argument("--val-split", default="val", help="split to validate on each epoch, if present (default val)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (slow to start; rarely pays on CPU)")
    t.add_argument("--checkpoint-every", type=int, default=50, help="optimizer steps between checkpoints (default 50)")
    t.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="full-gallery retrieval metrics of base or base+adapter",
                       description="Image↔text retrieval over the whole split: R@1/5/10, mean/median rank (any of an"
                                   " image's captions counts as a hit), plus the seed's in-batch top-1.")
    _model_flags(e, adapter=True)
    _data_flags(e)
    e.add_argument("--split", default="test", help="split to evaluate ('all' for every image; default test)")
    e.add_argument("--english-captions", help="English captions of the same images (e.g. Flickr8k.token.txt):"
                   " evaluated side by side")
    e.add_argument("--compare", action="store_true", help="evaluate the base model and the adapter in one run")
    e.add_argument("--json", help="write the metrics to this JSON file")

    p = sub.add_parser("predict", help="probability of each caption for one image")
    _model_flags(p, adapter=True)
    p.add_argument("--lang", default="tr", help="language of the captions (default tr)")
    p.add_argument("image", help="image file")
    p.add_argument("captions", nargs="+", help="candidate captions")

    m = sub.add_parser("merge", help="fold an adapter into the base weights: a standalone model folder")
    _model_flags(m, adapter=False)
    m.add_argument("--adapter", required=True, help="adapter folder")
    m.add_argument("--output", required=True, help="folder for the merged model (CLIPModel.from_pretrained loads it)")

    d = sub.add_parser("demo", help="offline end-to-end demo on a synthetic world (no downloads)",
                       description="Pretrain a small CLIP on English captions of synthetic scenes, then teach it"
                                   " Turkish with a LoRA adapter through the same train/evaluate code.")
    d.add_argument("--output", default="turkclip-demo", help="output folder (default ./turkclip-demo)")
    d.add_argument("--seed", type=int, default=0, help="seed of the world and of training (default 0)")
    d.add_argument("--quick", action="store_true", help="a much smaller run, for tests")
    d.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    # ANCHOR text-tower commands (issue 8)

    # ANCHOR photo commands: index, search, classify, serve (issue 9)

    # ANCHOR model tools: init-model (issue 9)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from turkclip.errors import TurkclipError  # heavy imports (torch, transformers) only after --help has been served

    from . import commands

    try:
        return getattr(commands, args.command)(args) or 0
    except TurkclipError as e:
        if args.debug:
            traceback.print_exc()
        print(f"turkclip {args.command}: error: {e}", file=sys.stderr)
        return 130 if type(e).__name__ == "Interrupted" else 1
    except KeyboardInterrupt:
        print(f"turkclip {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
