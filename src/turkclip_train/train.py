"""The training loop, one road at a time: data → road → loop.

Read `train()` top to bottom: the data (a train split, one random caption per image per epoch, and val) →
the road (turkclip/roads/: LoRA adapters, a new text tower, or every weight) builds what trains → with a
frozen image tower, every image embedded once (the bank) → optimizer and schedule → resume → the loop →
the best epoch's road saved in `output`. The loop never asks which road it is on: the road owns the
model, its parameter groups, the text path, the teacher and the losses, and saving (turkclip/roads/road.py).
Accelerate supplies the device, mixed precision and multi-GPU (`accelerate launch`); everything else is
plain PyTorch.
"""

from __future__ import annotations

import json
import math
import resource
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import get_cosine_schedule_with_warmup

from turkclip.data.augment import parse_policy
from turkclip.data.captions import read_captions
from turkclip.data.sampling import epoch_batches, pair_batches, with_pairs
from turkclip.data.stream import pixel_feed, visit_order
from turkclip.embedding.embed import BankWriter, cached_image_embeddings, features, resolve_precision
from turkclip.embedding.views import view_bank
from turkclip.errors import TurkclipError
from turkclip.evaluation.evaluate import evaluate
from turkclip.progress import bar as progress_bar
from turkclip.roads import load_clip
from turkclip.roads.optimizer import clamp_logit_scale
from turkclip.roads.road import Step, TrainingData

from . import checkpoint, distributed
from .config import TrainConfig, road_for
from .inputs import parallel_pairs, text_only, training_sets
from .logs import MetricsLog, plot_curves
from .memory import release_freed_memory


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
    road = road_for(cfg)
    road.check()  # combinations that cannot work fail before any data is read
    augments = parse_policy(cfg.augment, cfg.crop_scale).active  # a malformed --augment fails here too
    AcceleratorState._reset_state()  # Accelerate keeps settings per process; each run brings its own
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=_amp(cfg.precision),
                              step_scheduler_with_optimizer=False)
    device, main = accelerator.device, accelerator.is_main_process
    set_seed(cfg.seed)

    # 1. Data: parallel sentences (read first: a bad line stops the run before any image is decoded); the train
    #    split (one random caption per image per epoch) and, if present, val — none of it when the parallel
    #    sentences come alone. Shards are read once, streamed: with a frozen image tower straight into the image
    #    bank, else decoded per epoch (data/stream.py); a captions file's pixels are decoded once into a file.
    clip = load_clip(cfg.model, cfg.tokenizer)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
    parallel = parallel_pairs(cfg)
    precision = resolve_precision(cfg.precision, device)
    plain_bank = road.text_only and not augments  # the frozen image tower's bank (augmentation has its views)
    banks = BankWriter(clip.model, clip.preprocess, device, precision, cache_dir) if plain_bank else None
    train_set, val_set = (None, None) if text_only(cfg) else training_sets(cfg, clip.preprocess, cache_dir, banks)
    rehearsal = None
    if cfg.rehearsal_captions:
        rehearsal = train_set.with_captions(read_captions(cfg.rehearsal_captions, cfg.rehearsal_lang)).captions
    langs = [] if train_set is None else [train_set.lang] + ([cfg.rehearsal_lang] if rehearsal else [])
    policy = parse_policy(cfg.augment, cfg.crop_scale, langs=langs)
    data = TrainingData(train_set, rehearsal, cfg.rehearsal_lang, device, precision, cache_dir, policy.flip, parallel)

    # 2. The road: its teacher (the base CLIP's own English text tower, for distillation), then what trains.
    clip = road.build(clip, data)
    model = clip.model
    model.train()

    # 3. A frozen image tower: embed every image once (cached on disk) — or, with augmentation, K augmented views
    #    of it, from which each epoch takes its bank.
    bank = val_bank = views = None
    if road.text_only and train_set is not None:
        model.to(device)
        if policy.active:
            views = view_bank(model, train_set, clip.preprocess, device, precision, cache_dir, policy, cfg.seed,
                              cfg.augment_views)
        else:
            bank = cached_image_embeddings(model, train_set, clip.preprocess, device, precision, cache_dir).to(device)
        if val_set is not None:
            val_bank = cached_image_embeddings(model, val_set, clip.preprocess, device, precision, cache_dir)

    # 3b. The text path: how a batch's captions reach the trained text tower (road.text_path).
    net = ContrastiveModel(model, clip.preprocess, road.text_path(data))

    # 4. Optimizer (Adam, or AdamW with --weight-decay) over the road's parameter groups, warm-up + cosine schedule.
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(road.param_groups(net, cfg.lr, cfg.weight_decay), lr=cfg.lr)
    world = accelerator.num_processes  # --batch-size is per process; a step's global batch is batch_size × world

    def image_batches(epoch: int) -> list[list]:  # the whole step's (every process's) image–caption batches
        if train_set is None:
            return []
        return epoch_batches(train_set.captions, train_set.lang, cfg.batch_size * world, cfg.seed, epoch, rehearsal,
                             cfg.rehearsal_lang, cfg.rehearsal_ratio, flip=policy.flip,
                             order=visit_order(train_set.pixels, cfg.seed, epoch, cfg.batch_size, world))

    def local_steps(batches: list[list], epoch: int) -> list[list]:  # this process's micro-batches, pairs added
        local = distributed.local_batches(batches, accelerator.process_index, world)
        if not parallel:
            return local
        return with_pairs(local, distributed.local_batches(pair_batches(
            parallel, cfg.rehearsal_lang, cfg.lang, cfg.batch_size * world, cfg.seed, epoch), accelerator.process_index,
            world))

    work = " and ".join(([f"{len(train_set)} images"] if train_set is not None else [])
                        + ([f"{len(parallel)} sentence pairs"] if parallel else []))
    counted = [] if train_set is None else epoch_batches(train_set.captions, train_set.lang, cfg.batch_size * world,
                                                         cfg.seed, 0)
    steps_per_epoch = len(local_steps(counted, 0)) // cfg.grad_accum
    if steps_per_epoch == 0:
        raise TurkclipError(f"too little training data ({work}) for batch size {cfg.batch_size}")
    total_steps = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps,
                                                                                 steps_per_epoch * cfg.epochs)
    epochs = math.ceil(total_steps / steps_per_epoch)
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
        pixels = None if road.text_only else next(feed).to(device)
        text_emb, image_emb, logit_scale = net(net_text.inputs(items, device), pixels=pixels)
        gather = distributed.gather_with_grad if world > 1 else None
        return road.loss(Step(items, text_emb, image_emb, logit_scale, bank, gather))

    # 6. The loop. An epoch's batches are a function of (seed, epoch), so a resumed run skips
    #    exactly the steps it has done. Each optimizer step averages `grad_accum` micro-batches.
    if main and cfg.progress:  # the size of the work up front; the bar (or a line every 30 s) adds the time left
        print(f"training the {road.name} road on {work}: {total_steps} steps ({epochs} epochs of"
              f" {steps_per_epoch}, {cfg.batch_size * cfg.grad_accum * world} pairs a step)", flush=True)
    bar = progress_bar(total=total_steps, initial=position["global_step"], desc="training", unit="step",
                       enabled=cfg.progress and main)
    window, window_start = [], time.perf_counter()
    with _StopOnCtrlC() as stop:
        for epoch in range(position["epoch"], epochs):
            batches = image_batches(epoch)
            if views is not None:  # augmentation with a frozen image tower: this epoch's view of every image
                bank = views.for_epoch(epoch, batches).to(device)
            mine = local_steps(batches, epoch)
            steps = [mine[s * cfg.grad_accum : (s + 1) * cfg.grad_accum] for s in range(steps_per_epoch)]
            first = position["step"] if epoch == position["epoch"] else 0
            last_step = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)  # --max-steps may end an epoch early
            remaining = [m for s in steps[first:last_step] for m in s]  # the micro-batches this epoch still runs
            feed = None if road.text_only else pixel_feed(train_set.pixels, remaining, policy, cfg.seed, epoch,
                                                          accelerator.process_index, world, cfg.workers)
            for step in range(first, last_step):
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
                        f" best {road.saved_as} in {out} and the last checkpoint are untouched. Try a lower --lr or"
                        " --precision fp32")
                if cfg.clip_grad > 0:
                    accelerator.clip_grad_norm_(params, cfg.clip_grad)
                optimizer.step()
                clamp_logit_scale(model)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                position["global_step"] += 1
                window.append(loss_sum)
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum:.4f}")
                if position["global_step"] % cfg.log_every == 0 or step == last_step - 1:
                    pairs = len(window) * cfg.batch_size * cfg.grad_accum * accelerator.num_processes
                    log.write(kind="train", epoch=epoch + 1, step=position["global_step"], loss=sum(window) / len(window),
                              lr=scheduler.get_last_lr()[0], pairs_per_s=pairs / (time.perf_counter() - window_start))
                    window, window_start = [], time.perf_counter()
                # The epoch's last step is checkpointed after validation (below), so that a resumed run
                # never validates the same epoch twice.
                mid_epoch = step + 1 < last_step
                stopping = distributed.any_process(stop.requested, device)  # all processes stop at the same step
                if (position["global_step"] % cfg.checkpoint_every == 0 and mid_epoch) or stopping:
                    save_checkpoint(epoch, step + 1)
                if stopping:
                    bar.close()
                    raise Interrupted(f"interrupted: checkpoint saved at step {position['global_step']};"
                                      f" continue with the same command and --resume")

            # End of epoch: validate (every process embeds a share), keep the best epoch's road, checkpoint.
            metrics = None if val_set is None else evaluate(accelerator.unwrap_model(net).model, clip.text, clip.preprocess,
                                                            val_set, device, precision, image_emb=val_bank)
            if main:
                if metrics is not None:
                    log.write(kind="val", epoch=epoch + 1, step=position["global_step"], **metrics)
                    score = metrics["mean_recall"]
                    bar.write(f"epoch {epoch + 1}: val text→image R@1 {metrics['text_to_image']['R@1']:.2f}"
                              f"  image→text R@1 {metrics['image_to_text']['R@1']:.2f}  mean recall {score:.2f}")
                else:
                    score = -position["global_step"]  # no validation split: the latest epoch is kept
                if score > position["best"] or val_set is None:
                    position["best"] = score
                    road.save(out)
            accelerator.wait_for_everyone()
            save_checkpoint(epoch + 1, 0)
    bar.close()

    # 7. Finish: curves, a summary, the road's last words (a model card), the best epoch already in `output`.
    summary = {
        "output": str(out), "road": road.name, "saved_as": road.saved_as, "epochs": epochs,
        "steps": position["global_step"], "train_images": len(train_set) if train_set is not None else 0,
        "train_pairs": len(parallel), "val_images": len(val_set) if val_set is not None else 0,
        "skipped_images": sum(len(s.skipped) for s in (train_set, val_set) if s is not None),
        "best_val_mean_recall": position["best"] if val_set is not None else None, "precision": precision,
        "seconds": time.perf_counter() - started, "peak_memory_mb": _peak_memory_mb(device),
    }
    if main:
        records = log.records()
        plot_curves({"train": records}, out / "curves.png", objective=cfg.objective)
        road.finish(out, records)
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
