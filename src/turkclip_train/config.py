"""`TrainConfig`: every setting of a training run, each written once with its help text.

`turkclip train`'s flags are made from these fields (turkclip_train/flags.py), and `train(TrainConfig(...))`
takes the same names in Python. Defaults reproduce the seed notebook's recipe where it had one: LoRA r=16,
alpha=16, q_proj+v_proj in both towers, dropout 0.1, lr 1e-4, batch 64, 5 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from turkclip.models.hub import DEFAULT_MODEL
from turkclip.roads.settings import LoraSettings

SEED_RECIPE = ("Defaults reproduce the seed notebook: r=16, alpha=16, q_proj+v_proj in both towers, dropout 0.1,"
               " lr 1e-4, batch 64, 5 epochs")
ROADS = ("lora", "tower", "full")
TOWER = ("the text-tower road: CLIP's text tower swapped for a pretrained multilingual encoder + mean pooling + a"
         " projection into CLIP's embedding space; the image tower stays frozen (its embeddings are cached) and"
         " --output becomes a sentence-transformers folder aligned to --model")


def _cache_dir() -> str:
    from turkclip import cache  # imports torch: only when a config is made, never for --help

    return str(cache.default_dir())


def _cache_flag(value: str) -> str | None:
    return None if value == "none" else value


def _help(text: str, **more) -> dict:
    return {"help": text, **more}


@dataclass
class TrainConfig:
    # --- data ---------------------------------------------------------------------------------------------------
    captions: str | None = field(default=None, metadata=_help(
        "captions file: Karpathy JSON (TasvirEt), CSV/TSV/JSONL (image,caption[,split]) or Flickr8k.token.txt"))
    images: str | None = field(default=None, metadata=_help("folder the captions' image file names are relative to"))
    output: str = field(default="", metadata=_help(
        "folder for the trained road: an adapter (with its CLIPProcessor files and a model card README.md) or a"
        " sentence-transformers text tower; plus metrics.jsonl and curves.png. The training state for --resume goes"
        " in its checkpoint/ subfolder, which is not part of the model: leave it out when you ship the folder",
        required=True))
    shards: str | None = field(default=None, metadata=_help(
        "instead of --captions/--images: WebDataset tar shards as img2dataset writes them (key.jpg + key.txt or"
        " key.json), brace patterns allowed: 'data/{00000..00099}.tar'. Read once to check every sample (and, with a"
        " frozen image tower, to embed it); only keys and captions are cached, no pixels (train --pixel-store keeps"
        " them). Keys name the images (for --rehearsal-captions files)"))
    val_shards: str | None = field(default=None, metadata=_help(
        "with --shards: shards to validate on each epoch (default: no validation)"))
    model: str = field(default=DEFAULT_MODEL, metadata=_help("base CLIP: hub id or local folder"))
    tokenizer: str | None = field(default=None, metadata=_help("tokenizer folder, if the model folder has none"))
    lang: str = field(default="tr", metadata=_help("language of --captions (tr folds İ/I the Turkish way)"))
    encoding: str | None = field(default=None, metadata=_help(
        "text encoding of the captions file (default: UTF-8, BOMs detected)"))
    image_column: str = field(default="image", metadata=_help("CSV/JSONL column with the image file name"))
    caption_column: str = field(default="caption", metadata=_help("CSV/JSONL column with the caption"))
    split_column: str = field(default="split", metadata=_help("CSV/JSONL column with the split, if any"))
    train_split: str = field(default="train", metadata=_help("split to train on"))
    val_split: str | None = field(default="val", metadata=_help("split to validate on each epoch, if present"))
    limit_images: int | None = field(default=None, metadata=_help(
        "train on the first N train images only (and validate on at most N): a quick trial of a recipe", metavar="N"))
    skip_bad_images: bool = field(default=False, metadata=_help(
        "leave out missing or unreadable images (counted and reported) instead of stopping"))
    pixel_store: bool = field(default=False, metadata=_help(
        "with --shards and an image tower that trains: decode the images once into the on-disk pixel cache (150 KB"
        " an image at 224 px) and read them back each epoch, instead of decoding them from the shards every epoch;"
        " pays for small sets read for many epochs on few cores (docs/data.md)"))
    workers: int | None = field(default=None, metadata=_help(
        "with --shards and an image tower that trains: processes that decode the images each epoch, per training"
        " process (default: half the cores, 1 to 4; 0 decodes in the training process)", metavar="N"))
    cache_dir: str | None = field(default_factory=_cache_dir, metadata=_help(
        "where decoded pixels, frozen image embeddings and teacher targets are cached (default ~/.cache/turkclip or"
        " $TURKCLIP_CACHE; 'none' disables)", convert=_cache_flag))
    # --- English kept: rehearsal captions -----------------------------------------------------------------------
    rehearsal_captions: str | None = field(default=None, metadata=_help(
        "base-language captions of the same images (e.g. Flickr8k.token.txt), mixed into training so the model does"
        " not forget that language; the teacher's English for --objective distill/mix"))
    rehearsal_lang: str = field(default="en", metadata=_help("language of --rehearsal-captions"))
    rehearsal_ratio: float = field(default=0.0, metadata=_help("fraction of items that use a rehearsal caption"))
    # --- the road -----------------------------------------------------------------------------------------------
    road: str | None = field(default=None, metadata=_help(
        "lora: LoRA adapters on CLIP's own towers (the seed's road); tower: a new text tower (--text-model); full:"
        " every weight of CLIP trains (how the demo pretrains its base). Default: tower with --text-model, else lora",
        choices=list(ROADS)))
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"prefix": "lora_"})
    train_token_rows: str = field(default="none", metadata=_help(
        "LoRA road: also train token-embedding rows. new = pieces that occur in the captions but never in"
        " --rehearsal-captions (ones the base model cannot have learnt); all = every piece used",
        choices=["none", "new", "all"]))
    text_model: str | None = field(default=None, metadata=_help(
        "text encoder to align: hub id or folder (BERT, DistilBERT, XLM-R, e5; see `turkclip convert-e5`), or a tower"
        " turkclip trained, to train it further", group=f"the text-tower road: {TOWER}"))
    text_train: str = field(default="lora", metadata=_help(
        "head: the projection only (encoder frozen, its features computed once per caption); lora: LoRA"
        " (--lora-r/alpha/dropout) on the encoder's attention; full: every weight", choices=["head", "lora", "full"],
        group="the text-tower road"))
    text_layers: int | None = field(default=None, metadata=_help(
        "with --text-train lora or full: only the top N layers of the encoder train (LoRA in them, or every weight of"
        " them); the embeddings and the layers below are frozen, so their output is computed once per sentence and a"
        " step runs only the top N layers (e5-small has 12; the demo trains the top 2)", metavar="N",
        group="the text-tower road"))
    head_init: str = field(default="random", metadata=_help(
        "the new projection head's start. lstsq: the closed-form least-squares map from the encoder's pooled"
        " features to the teacher's embeddings — both sides of each --parallel-captions pair to its English side's,"
        " the --rehearsal-captions (with --objective distill/mix) to their own — computed in one pass before the"
        " first step; random: a random linear layer", choices=["random", "lstsq"], group="the text-tower road"))
    parallel_captions: str | None = field(default=None, metadata=_help(
        "parallel sentences: a .tsv of base<TAB>new lines (an optional first line naming the columns, e.g."
        " en<TAB>tr) or a .jsonl of {\"en\": ..., \"tr\": ...} objects, e.g. translated captions. The new tower"
        " learns student(en) ≈ teacher(en) and student(tr) ≈ teacher(en), the base CLIP's own text tower being the"
        " teacher (multilingual distillation, as M-CLIP). Alone (no --captions/--images: text only, no image is"
        " read) or beside the image–caption objective (each step then adds --batch-size pairs)",
        group="the text-tower road"))
    parallel_columns: str | None = field(default=None, metadata=_help(
        "the base and new language's column names in --parallel-captions, comma-separated (JSONL keys, or the TSV"
        " header's names; default: --rehearsal-lang,--lang, e.g. en,tr)", metavar="BASE,NEW",
        group="the text-tower road"))
    parallel_encoding: str | None = field(default=None, metadata=_help(
        "text encoding of --parallel-captions (default: UTF-8, BOMs detected)", group="the text-tower road"))
    parallel_weight: float = field(default=1.0, metadata=_help(
        "weight of the parallel-sentence loss beside the image–caption objective", group="the text-tower road"))
    skip_bad_lines: bool = field(default=False, metadata=_help(
        "leave out bad lines of --parallel-captions (counted and reported) instead of stopping at the first",
        group="the text-tower road"))
    # --- the objective ------------------------------------------------------------------------------------------
    objective: str = field(default="contrastive", metadata=_help(
        "contrastive: captions against images (in-batch, or the cached bank with --negatives bank); distill: towards"
        " the base CLIP's text embedding of the English captions of the same image (needs --rehearsal-captions);"
        " mix: both, distillation weighted by --distill-weight", choices=["contrastive", "distill", "mix"]))
    distill_weight: float = field(default=0.5, metadata=_help("weight of distillation in --objective mix"))
    negatives: str = field(default="batch", metadata=_help(
        "bank (image tower frozen): score each caption against every cached train image, not just the batch",
        choices=["batch", "bank"]))
    augment: str = field(default="none", metadata=_help(
        "image augmentations, a comma list. crop: random resized crop (captions unchanged; area range --crop-scale)."
        " flip: mirror half the images and swap the caption's left/right words (sol/sağ with their suffixes,"
        " left/right as positions); an item whose caption cannot be swapped safely is not flipped; Turkish and English"
        " only. color: mild brightness/contrast/saturation jitter, captions unchanged (off by default: colours are"
        " words in captions). none: no augmentation. Deterministic per (seed, epoch, image)", metavar="LIST"))
    crop_scale: str | None = field(default=None, metadata=_help(
        "area fraction range of the crop augmentation (default 0.9,1.0, as open_clip; smaller crops can cut away what"
        " the caption names)", metavar="LO,HI"))
    augment_views: int = field(default=4, metadata=_help(
        "image tower frozen: augmented views embedded once and cached per image; each epoch uses one, chosen per"
        " (seed, epoch, image)", metavar="K"))
    # --- optimisation -------------------------------------------------------------------------------------------
    epochs: int = field(default=5, metadata=_help("passes over the train images"))
    max_steps: int | None = field(default=None, metadata=_help(
        "stop after N optimizer steps (the schedule is fitted to them): a quick trial", metavar="N"))
    batch_size: int = field(default=64, metadata=_help("images per micro-batch, one caption each"))
    grad_accum: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    lr: float = field(default=1e-4, metadata=_help("peak learning rate of the trained weights"))
    head_lr: float | None = field(default=None, metadata=_help(
        "text-tower road: peak learning rate of the projection head (default --lr)", group="the text-tower road"))
    encoder_lr: float | None = field(default=None, metadata=_help(
        "text-tower road: peak learning rate of the encoder's LoRA or weights (default --lr)",
        group="the text-tower road"))
    scale_lr: float | None = field(default=None, metadata=_help(
        "peak learning rate of the temperature (logit scale), where it trains (default --lr)"))
    weight_decay: float = field(default=0.0, metadata=_help(
        "AdamW weight decay of matrices (0: the seed's plain Adam; never on biases, norms, the logit scale)"))
    warmup_ratio: float = field(default=0.05, metadata=_help(
        "fraction of steps of linear warm-up before cosine decay"))
    clip_grad: float = field(default=1.0, metadata=_help("max gradient norm (0 disables)"))
    precision: str = field(default="auto", metadata=_help(
        "auto: bf16 where the GPU/CPU runs it natively, else fp32", choices=["auto", "fp32", "bf16", "fp16"]))
    compile: bool = field(default=False, metadata=_help("torch.compile the model (slow to start; rarely pays on CPU)"))
    seed: int = field(default=0, metadata=_help("seed for LoRA init, data order, augmentation and dropout"))
    # --- the run ------------------------------------------------------------------------------------------------
    resume: bool = field(default=False, metadata=_help(
        "continue the run in --output from its checkpoint (--output/checkpoint/)"))
    checkpoint_every: int = field(default=50, metadata=_help(
        "optimizer steps between checkpoints (one is also written after every epoch)"))
    log_every: int = field(default=10, metadata=_help("optimizer steps between lines of metrics.jsonl"))
    progress: bool = field(default=True, metadata=_help("no progress bar", negate="--no-progress"))

    def road_name(self) -> str:
        """The road this run takes: --road, else tower with --text-model, else lora."""
        return self.road or ("tower" if self.text_model else "lora")


def road_for(cfg: TrainConfig):
    """The `Road` a config asks for (turkclip/roads/): the one place where the road's flags are read."""
    from turkclip.errors import TurkclipError
    from turkclip.roads.full import FullRoad
    from turkclip.roads.lora import LoraRoad
    from turkclip.roads.road import Objective
    from turkclip.roads.tower import TowerRoad

    name = cfg.road_name()
    objective = Objective(cfg.objective, cfg.distill_weight, cfg.negatives)
    if name != "lora" and cfg.train_token_rows != "none":
        raise TurkclipError("--train-token-rows is for CLIP's own text tower (the LoRA road); a --text-model has its"
                            " own vocabulary")
    _check_parallel(cfg, name)
    if name == "tower":
        if not cfg.text_model:
            raise TurkclipError("--road tower needs --text-model (the encoder to align)")
        return TowerRoad(cfg.text_model, cfg.text_train, cfg.lora, objective, cfg.head_lr, cfg.encoder_lr,
                         cfg.scale_lr, cfg.text_layers, cfg.head_init, cfg.parallel_weight)
    for flag, value, default in (("--text-layers", cfg.text_layers, None), ("--head-init", cfg.head_init, "random")):
        if value != default:
            raise TurkclipError(f"{flag} is for the text-tower road (--text-model)")
    if cfg.text_model:
        raise TurkclipError(f"--text-model is the text-tower road; it does not go with --road {name}")
    if name == "full":
        return FullRoad(objective, lang=cfg.lang)
    return LoraRoad(cfg.lora, cfg.train_token_rows, objective, lang=cfg.lang, card=_card(cfg))


def _check_parallel(cfg: TrainConfig, road: str) -> None:
    """--parallel-captions: the text-tower road's, and alone (no image source) only with flags that need no image."""
    from turkclip.errors import TurkclipError

    if not cfg.parallel_captions:
        return
    if road != "tower":
        raise TurkclipError("--parallel-captions teaches the text-tower road (--text-model); the LoRA road learns from"
                            " image–caption pairs")
    if cfg.captions or cfg.images or cfg.shards:
        return
    for flag, given in (("--objective distill/mix", cfg.objective != "contrastive"),
                        ("--rehearsal-captions", cfg.rehearsal_captions), ("--augment", cfg.augment != "none"),
                        ("--negatives bank", cfg.negatives != "batch")):
        if given:
            raise TurkclipError(f"{flag} is about the captions of images; with --parallel-captions alone (no"
                                " --captions/--images) there are none: leave it out, or add the image–caption data")


def _card(cfg: TrainConfig) -> dict:
    """What the adapter's model card states about the run (turkclip/roads/model_card.py)."""
    lora = cfg.lora
    settings = {"LoRA": f"r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}, on {'+'.join(lora.targets)}"
                        f" ({lora.towers} tower{'s' if lora.towers == 'both' else ''}"
                        f"{f', top {lora.layers} layers' if lora.layers else ''})",
                "token-embedding rows trained": cfg.train_token_rows, "epochs": cfg.epochs,
                "batch size": cfg.batch_size * cfg.grad_accum, "learning rate": cfg.lr,
                "English rehearsal": f"{cfg.rehearsal_ratio:.0%} of items" if cfg.rehearsal_captions else "none",
                "precision": cfg.precision, "seed": cfg.seed}
    data = Path(cfg.captions).stem if cfg.captions else Path((cfg.shards or "").split("{")[0].rstrip("/-_.")).name
    datasets = [data or "shards"] + ([Path(cfg.rehearsal_captions).stem] if cfg.rehearsal_captions else [])
    return {"base_model": cfg.model, "lang": cfg.lang, "datasets": datasets, "settings": settings, "name": cfg.output}
