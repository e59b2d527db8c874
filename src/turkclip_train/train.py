"""The training loop: contrastive LoRA fine-tuning of CLIP on image–caption pairs.

Read `train()` top to bottom: data → model and adapter → (text-only: cached image
embeddings) → the text path (the whole text tower per step, or only its trained top layers on
remembered lower-layer states, turkclip/roads/text_prefix.py) → optimizer and schedule → resume → the loop →
the best adapter in `output`.
Accelerate supplies the device, mixed precision and multi-GPU (`accelerate launch`);
everything else is plain PyTorch.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from turkclip import cache
from turkclip.data.augment import batch_pixels, parse_policy
from turkclip.data.captions import read_captions
from turkclip.data.sampling import epoch_batches
from turkclip.embedding.embed import cached_image_embeddings, features, resolve_precision
from turkclip.embedding.views import view_bank
from turkclip.errors import TurkclipError
from turkclip.evaluation.evaluate import evaluate
from turkclip.models.clip import DEFAULT_MODEL, save_clip
from turkclip.models.processor import save_processor
from turkclip.roads import load_clip
from turkclip.roads.adapters import LoraSettings, attach_lora
from turkclip.roads.loss import bank_loss, clip_loss, distill_loss
from turkclip.roads.optimizer import clamp_logit_scale, param_groups
from turkclip.roads.teacher import build_teacher
from turkclip.roads.text_prefix import FullText, PrefixText
from turkclip.roads.text_tower import new_text_tower, swap_text_tower

from . import checkpoint, distributed
from .inputs import training_sets
from .logs import MetricsLog, plot_curves
from .memory import release_freed_memory

# Test hook: seconds to sleep after each optimizer step, so tests/test_resume.py can interrupt a run mid-epoch.
_STEP_DELAY = float(os.environ.get("TURKCLIP_TEST_STEP_DELAY", "0"))


@dataclass
class TrainConfig:
    """Every setting of a run. Defaults reproduce the seed notebook's recipe where it had one."""

    captions: str | None  # captions file and the images folder it names ...
    images: str | None
    output: str
    shards: str | None = None  # ... or WebDataset tar shards, e.g. "data/{00000..00099}.tar"
    val_shards: str | None = None
    model: str = DEFAULT_MODEL
    tokenizer: str | None = None
    lang: str = "tr"
    encoding: str | None = None
    image_column: str = "image"
    caption_column: str = "caption"
    split_column: str = "split"
    train_split: str = "train"
    val_split: str | None = "val"  # validated on when the captions file has it
    rehearsal_captions: str | None = None  # base-language (English) captions of the same images
    rehearsal_lang: str = "en"
    rehearsal_ratio: float = 0.0  # fraction of training items that use a rehearsal caption
    epochs: int = 5
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0  # 0 = the seed's plain Adam
    warmup_ratio: float = 0.05
    clip_grad: float = 1.0  # max gradient norm; 0 disables
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # None: train every weight (demo stage 1)
    text_model: str | None = None  # a text encoder that replaces CLIP's text tower (the image tower stays frozen)
    text_train: str = "lora"  # head | lora | full: how much of the --text-model trains
    objective: str = "contrastive"  # contrastive | distill | mix (distill needs rehearsal_captions)
    distill_weight: float = 0.5  # weight of the distillation term with objective "mix"
    train_token_rows: str = "none"  # none | new | all: token-embedding rows trained with the adapter
    negatives: str = "batch"  # batch | bank (text tower only: every cached train image is a negative)
    augment: str = "none"  # turkclip.data.augment policy, e.g. "crop:0.9-1,flip"
    augment_views: int = 4  # text tower only: augmented views cached per image
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    compile: bool = False
    seed: int = 0
    skip_bad_images: bool = False
    cache_dir: str | None = field(default_factory=lambda: str(cache.default_dir()))  # None: no disk cache
    resume: bool = False
    checkpoint_every: int = 50  # optimizer steps; a checkpoint is also written after every epoch
    log_every: int = 10
    progress: bool = True


class ContrastiveModel(torch.nn.Module):
    """One training forward: captions (and pixels, unless image embeddings are cached) → embeddings.
    `text` is what the run's text path (`FullText` / `PrefixText`) made of the batch's captions."""

    def __init__(self, model, preprocess, text_path):
        super().__init__()
        self.model, self.preprocess, self.text_path = model, preprocess, text_path

    def forward(self, text: dict, pixels=None):
        text = self.text_path.features(self.model, **text)
        image = None
        if pixels is not None:
            image = features(self.model.get_image_features(pixel_values=self.preprocess.normalize(pixels)))
        return text, image, self.model.logit_scale


def train(cfg: TrainConfig) -> dict:
    started = time.perf_counter()
    release_freed_memory()  # RSS stays at the working set over long runs (memory.py)
    out = Path(cfg.output)
    _check_output(out, cfg.resume)
    text_only = cfg.text_model is not None or (cfg.lora is not None and cfg.lora.towers == "text")
    _check_flags(cfg, text_only)  # combinations that cannot work fail before any data is read
    AcceleratorState._reset_state()  # Accelerate keeps settings per process; each run brings its own
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=_amp(cfg.precision),
                              step_scheduler_with_optimizer=False)
    device, main = accelerator.device, accelerator.is_main_process
    set_seed(cfg.seed)

    # 1. Data: the train split (one random caption per image per epoch) and, if present, val. Pixels are decoded
    #    once into a file on disk (by one process) and each batch reads its own rows.
    clip = load_clip(cfg.model, cfg.tokenizer)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
    train_set, val_set = training_sets(cfg, clip.preprocess, cache_dir)
    rehearsal = None
    if cfg.rehearsal_captions:
        rehearsal = train_set.with_captions(read_captions(cfg.rehearsal_captions, cfg.rehearsal_lang)).captions
    policy = parse_policy(cfg.augment, langs=[train_set.lang] + ([cfg.rehearsal_lang] if rehearsal else []))

    # 2. Model: freeze the base, attach LoRA (and token rows), swap in a new text tower, or train
    #    everything (demo stage 1). Distillation's teacher is the base CLIP's own text tower.
    precision = resolve_precision(cfg.precision, device)
    teacher = None if cfg.objective == "contrastive" else build_teacher(
        clip, rehearsal, cfg.rehearsal_lang, device, precision, cache_dir, flip=policy.flip)
    clip, model = _build_model(cfg, clip, train_set, rehearsal)
    model.train()

    # 3. Text-only adaptation: the image tower is frozen, so embed every image once (cached on disk) — or, with
    #    augmentation, K augmented views of it, from which each epoch takes its bank.
    bank = val_bank = views = None
    if text_only:
        model.to(device)
        if policy.active:
            views = view_bank(model, train_set, clip.preprocess, device, precision, cache_dir, policy, cfg.seed,
                              cfg.augment_views)
        else:
            bank = cached_image_embeddings(model, train_set, clip.preprocess, device, precision, cache_dir).to(device)
        if val_set is not None:
            val_bank = cached_image_embeddings(model, val_set, clip.preprocess, device, precision, cache_dir)

    # 3b. The text path: the whole text tower every step, or, when nothing below the top LoRA layers trains,
    #     only those layers on lower-layer states remembered per caption.
    net = ContrastiveModel(model, clip.preprocess, _text_path(cfg, clip, model, train_set, rehearsal, device,
                                                              precision))

    # 4. Optimizer (Adam, or AdamW with --weight-decay) and warm-up + cosine schedule.
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(net, cfg.weight_decay), lr=cfg.lr)  # no decay: biases, norms, logit scale
    world = accelerator.num_processes  # --batch-size is per process; a step's global batch is batch_size × world
    steps_per_epoch = len(distributed.local_batches(epoch_batches(
        train_set.captions, train_set.lang, cfg.batch_size * world, cfg.seed, 0), 0, world)) // cfg.grad_accum
    if steps_per_epoch == 0:
        raise TurkclipError(f"too few training images ({len(train_set)}) for batch size {cfg.batch_size}")
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    net_text = net.text_path
    net, optimizer = accelerator.prepare(net, optimizer)
    if cfg.compile:
        net = torch.compile(net)

    # 5. Resume: trainable weights, optimizer, schedule, RNG and data position.
    # The settings that decide which batches a step sees: a resume with others would not continue this run.
    run = checkpoint.run_settings(cfg, world)
    position = {"epoch": 0, "step": 0, "global_step": 0, "best": -math.inf, "run": run}
    if cfg.resume and (out / checkpoint.FILENAME).exists():
        position = checkpoint.load(out, model, optimizer, scheduler, accelerator.process_index)
        checkpoint.check_same_run(out, position.get("run", {}), run)
        accelerator.print(f"resuming from epoch {position['epoch'] + 1}, step {position['step']}")
    out.mkdir(parents=True, exist_ok=True)
    if main:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    log = MetricsLog(out / "metrics.jsonl", position["global_step"] if cfg.resume else None, enabled=main)

    def save_checkpoint(epoch: int, step: int) -> None:  # called by every process: it gathers their RNG states
        rng = distributed.rng_states()
        if main:
            checkpoint.save(out, model, optimizer, scheduler, {**position, "epoch": epoch, "step": step}, rng)
        distributed.barrier()  # no process runs on (or exits) before the checkpoint is on disk

    def step_loss(items, epoch: int) -> torch.Tensor:
        image_idx = torch.tensor([it.image for it in items], device=device)
        text = net_text.inputs(items, device)
        pixels = None if text_only else batch_pixels(train_set.pixels, items, policy, cfg.seed, epoch).to(device)
        text_emb, image_emb, logit_scale = net(text, pixels=pixels)
        loss = 0.0
        if teacher is not None:  # distillation: each caption towards the teacher's English embedding(s)
            target, has = teacher.targets(items, device)
            weight = 1.0 if cfg.objective == "distill" else cfg.distill_weight
            loss = weight * distill_loss(text_emb[has].float(), target[has]) if has.any() else 0.0 * text_emb.sum()
            if cfg.objective == "distill":
                return loss
        if text_only and cfg.negatives == "bank":
            return loss + bank_loss(text_emb.float(), bank, image_idx, logit_scale)
        if text_only:
            image_emb = bank[image_idx]
        if accelerator.num_processes > 1:  # negatives from every process; gradients flow back through the gather
            text_emb, image_emb = distributed.gather_with_grad(text_emb), distributed.gather_with_grad(image_emb)
        return loss + clip_loss(text_emb.float(), image_emb.float(), logit_scale)

    # 6. The loop. An epoch's batches are a function of (seed, epoch), so a resumed run skips
    #    exactly the steps it has done. Each optimizer step averages `grad_accum` micro-batches.
    bar = tqdm(total=total_steps, initial=position["global_step"], desc="training", unit="step",
               disable=None if (cfg.progress and main) else True)  # None: no bar on a pipe
    window, window_start = [], time.perf_counter()
    with _StopOnCtrlC() as stop:
        for epoch in range(position["epoch"], cfg.epochs):
            batches = epoch_batches(train_set.captions, train_set.lang, cfg.batch_size * world, cfg.seed, epoch,
                                    rehearsal, cfg.rehearsal_lang, cfg.rehearsal_ratio, flip=policy.flip)
            if views is not None:  # text-only augmentation: this epoch's view of every image
                bank = views.for_epoch(epoch, batches).to(device)
            mine = distributed.local_batches(batches, accelerator.process_index, world)
            steps = [mine[s * cfg.grad_accum : (s + 1) * cfg.grad_accum] for s in range(steps_per_epoch)]
            first = position["step"] if epoch == position["epoch"] else 0
            for step in range(first, steps_per_epoch):
                loss_sum = 0.0
                for j, micro in enumerate(steps[step]):
                    last = j == len(steps[step]) - 1
                    with nullcontext() if last else accelerator.no_sync(net):
                        loss = step_loss(micro, epoch) / len(steps[step])
                        accelerator.backward(loss)
                    loss_sum += loss.item()
                if distributed.any_process(not math.isfinite(loss_sum), device):
                    raise TurkclipError(
                        f"loss became {loss_sum} at step {position['global_step'] + 1} (epoch {epoch + 1}); stopped. The"
                        f" best adapter in {out} and the last checkpoint are untouched. Try a lower --lr or --precision fp32")
                if cfg.clip_grad > 0:
                    accelerator.clip_grad_norm_(params, cfg.clip_grad)
                optimizer.step()
                clamp_logit_scale(model)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                position["global_step"] += 1
                if _STEP_DELAY:
                    time.sleep(_STEP_DELAY)
                window.append(loss_sum)
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum:.4f}")
                if position["global_step"] % cfg.log_every == 0 or step == steps_per_epoch - 1:
                    pairs = len(window) * cfg.batch_size * cfg.grad_accum * accelerator.num_processes
                    log.write(kind="train", epoch=epoch + 1, step=position["global_step"], loss=sum(window) / len(window),
                              lr=scheduler.get_last_lr()[0], pairs_per_s=pairs / (time.perf_counter() - window_start))
                    window, window_start = [], time.perf_counter()
                # The epoch's last step is checkpointed after validation (below), so that a resumed run
                # never validates the same epoch twice.
                mid_epoch = step + 1 < steps_per_epoch
                stopping = distributed.any_process(stop.requested, device)  # all processes stop at the same step
                if (position["global_step"] % cfg.checkpoint_every == 0 and mid_epoch) or stopping:
                    save_checkpoint(epoch, step + 1)
                if stopping:
                    bar.close()
                    raise Interrupted(f"interrupted: checkpoint saved at step {position['global_step']};"
                                      f" continue with the same command and --resume")

            # End of epoch: validate (every process embeds a share), keep the best adapter, checkpoint the position.
            metrics = None if val_set is None else evaluate(accelerator.unwrap_model(net).model, clip.text, clip.preprocess,
                                                            val_set, device, precision, image_emb=val_bank)
            if main:
                if metrics is not None:
                    log.write(kind="val", epoch=epoch + 1, step=position["global_step"], **metrics)
                    score = metrics["mean_recall"]
                    bar.write(f"epoch {epoch + 1}: val text→image R@1 {metrics['text_to_image']['R@1']:.2f}"
                              f"  image→text R@1 {metrics['image_to_text']['R@1']:.2f}  mean recall {score:.2f}")
                else:
                    score = -position["global_step"]  # no validation split: the latest adapter is kept
                if score > position["best"] or val_set is None:
                    position["best"] = score
                    _save_weights(clip, model, out, full=cfg.lora is None, lang=cfg.lang)
            accelerator.wait_for_everyone()
            save_checkpoint(epoch + 1, 0)
    bar.close()

    # 7. Finish: curves, a summary, and the best adapter already in `output`.
    summary = {
        "output": str(out), "epochs": cfg.epochs, "steps": position["global_step"], "train_images": len(train_set),
        "val_images": len(val_set) if val_set is not None else 0, "skipped_images": len(train_set.skipped) + (
            len(val_set.skipped) if val_set is not None else 0),
        "best_val_mean_recall": position["best"] if val_set is not None else None, "precision": precision,
        "seconds": time.perf_counter() - started, "peak_memory_mb": _peak_memory_mb(device),
    }
    if main:
        plot_curves({"train": log.records()}, out / "curves.png")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _check_output(out: Path, resume: bool) -> None:
    checkpoint.move_legacy(out)  # a checkpoint.pt from before checkpoint/ existed
    if not resume and (out / checkpoint.FILENAME).exists():
        raise TurkclipError(f"{out} already holds a training run; pass --resume to continue it or choose another --output")


def _amp(precision: str) -> str:
    """Accelerate's name for the precision; 'auto' is resolved by Accelerate's device."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[resolve_precision(precision, device)]


def _check_flags(cfg: TrainConfig, text_only: bool) -> None:
    if cfg.negatives == "bank" and not text_only:
        raise TurkclipError("--negatives bank needs --lora-towers text (the image bank must be frozen)")
    layers = cfg.lora.layers if cfg.lora is not None else None
    if cfg.text_model and layers is not None:
        raise TurkclipError("--lora-layers is for CLIP's own text tower, not a --text-model")
    if cfg.text_model and cfg.train_token_rows != "none":
        raise TurkclipError("--train-token-rows is for CLIP's own text tower; a --text-model has its own vocabulary")
    if layers is not None and not cfg.text_model and cfg.lora.towers != "text":
        raise TurkclipError("--lora-layers is for the text tower: it needs --lora-towers text")


def _build_model(cfg: TrainConfig, clip, train_set, rehearsal):
    """(clip, model) to train: a new text tower on the frozen base, CLIP + LoRA, or all of CLIP."""
    if cfg.text_model:
        tower = new_text_tower(cfg.text_model, clip.model.config.projection_dim)
        tower.prepare_training(cfg.text_train, cfg.lora)
        clip = swap_text_tower(clip, tower, source=cfg.text_model)
        clip.model.logit_scale.requires_grad_(cfg.objective != "distill")  # distillation has no temperature
        return clip, clip.model
    if cfg.lora is None:
        return clip, clip.model
    cfg.lora.token_ids = _token_rows(cfg, clip, train_set, rehearsal)
    return clip, attach_lora(clip.model, cfg.lora)


def _text_path(cfg: TrainConfig, clip, model, train_set, rehearsal, device, precision):
    """`PrefixText` with `--lora-layers` when only that LoRA trains (text-only, no token rows): the layers below
    it are frozen, their output a function of the caption, computed here once per train caption. Otherwise
    `FullText`: the whole tower every step. (Without --lora-layers the prefix would be only the embeddings; its
    savings, tokenizing once and the last layer at the pooled position, were not measurable: bench/RESULTS.md.)"""
    if (cfg.text_model or cfg.lora is None or cfg.lora.towers != "text" or cfg.train_token_rows != "none"
            or cfg.lora.layers is None):
        return FullText(clip.text)
    path = PrefixText(model, clip.text, cfg.lora.layers, device, precision)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None  # a second run with these captions reads the pass
    path.remember([c for caps in train_set.captions for c in caps], train_set.lang, cache_dir)
    if rehearsal is not None:
        path.remember([c for caps in rehearsal for c in caps], cfg.rehearsal_lang, cache_dir)
    return path  # captions it has not seen (mirrored ones, --augment flip) are computed when first met


def _token_rows(cfg: TrainConfig, clip, train_set, rehearsal) -> list[int]:
    """Token-embedding rows to train: none, all pieces of the training captions, or only the pieces the
    base language (rehearsal captions) never uses — the ones the base model cannot have learnt."""
    if cfg.train_token_rows == "none":
        return []
    texts = [c for caps in train_set.captions for c in caps]
    rows = clip.text.token_ids(texts, train_set.lang) - set(clip.text.tokenizer.all_special_ids)
    if cfg.train_token_rows == "new":
        if rehearsal is None:
            raise TurkclipError("--train-token-rows new needs --rehearsal-captions (base-language captions to compare with)")
        rows -= clip.text.token_ids([c for caps in rehearsal for c in caps], cfg.rehearsal_lang)
    return sorted(rows)


def _save_weights(clip, model, out: Path, full: bool, lang: str = "tr") -> None:
    """Write the adapter (with the processor that tokenizes as turkclip does), the text tower (a sentence-transformers
    folder) or, for full training, the whole model into `out`, file by file atomically."""
    tmp = out / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    save_clip(clip, tmp, model) if full else model.save_pretrained(tmp)
    save_processor(clip, tmp, lang)  # CLIPProcessor.from_pretrained(out) tokenizes as turkclip does (not for a tower)
    for f in tmp.iterdir():
        if f.is_dir() and (out / f.name).is_dir():  # a module subfolder (1_Pooling, 2_Dense) of an earlier epoch
            shutil.rmtree(out / f.name)
        os.replace(f, out / f.name)
    tmp.rmdir()


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Interrupted(TurkclipError):
    """Ctrl-C during training: a checkpoint was saved; the CLI exits with 130."""


class _StopOnCtrlC:
    """First Ctrl-C: finish the current step, checkpoint, exit. Second Ctrl-C: stop at once."""

    requested = False

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread: leave signals alone
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
