"""Resumable training state in one file, written atomically.

`checkpoint/checkpoint.pt` in the output folder holds the trainable tensors, optimizer and scheduler
state, RNG states and the position in the data. It is a subfolder so that the adapter folder a user
ships holds no training state: leave `checkpoint/` out (or delete it) once training is done.
It is written to a temp file and renamed over the old one, so a kill at any moment leaves the
previous checkpoint intact. It is our own file, and it is still
read with `torch.load(weights_only=True)`: no pickled code ever runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from turkclip.atomic import atomic_path
from turkclip.errors import TurkclipError

SUBFOLDER = "checkpoint"
FILENAME = f"{SUBFOLDER}/checkpoint.pt"  # relative to the output folder


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save(folder: Path, model, optimizer, scheduler, position: dict, rng_per_rank: list[dict] | None = None) -> None:
    """`rng_per_rank`: every process's RNG state when training in several (distributed.rng_states())."""
    state = {
        "trainable": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "per_rank": rng_per_rank or []},
        "position": position,  # epoch, step_in_epoch, global_step, best, ...
    }
    with atomic_path(folder / FILENAME) as tmp:
        torch.save(state, tmp)


def move_legacy(folder: Path) -> None:
    """Runs from before the checkpoint/ subfolder kept checkpoint.pt beside the adapter: move it in, so that
    --resume continues them and a new run without --resume refuses them, as for any other run."""
    old = folder / "checkpoint.pt"
    if old.is_file() and not (folder / FILENAME).exists():
        (folder / SUBFOLDER).mkdir(exist_ok=True)
        os.replace(old, folder / FILENAME)


def load(folder: Path, model, optimizer, scheduler, rank: int = 0) -> dict:
    """Restore everything `save` wrote (the RNG state of process `rank`); returns the saved position."""
    try:
        state = torch.load(folder / FILENAME, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file
        raise TurkclipError(f"cannot read {folder / FILENAME}: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or not {"trainable", "optimizer", "scheduler", "rng", "position"} <= state.keys():
        raise TurkclipError(f"{folder / FILENAME} is not a turkclip checkpoint; use another --output or remove it")
    params = dict(model.named_parameters())
    shapes = {n: tuple(t.shape) for n, t in state["trainable"].items()}
    if shapes != {n: tuple(p.shape) for n, p in params.items() if p.requires_grad}:
        raise TurkclipError(f"{folder / FILENAME} was written by a run with other LoRA settings; resume with the same flags")
    with torch.no_grad():
        for name, tensor in state["trainable"].items():
            params[name].copy_(tensor)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError:  # e.g. other parameter groups (weight decay split by an older turkclip)
        raise TurkclipError(f"{folder / FILENAME} holds optimizer state of another layout; start a new --output") from None
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    if rank < len(rng.get("per_rank", [])):  # (another number of processes is refused by check_same_run)
        rng = rng["per_rank"][rank]
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["position"]


def run_settings(cfg, processes: int) -> dict:
    """The settings a resumed run must share with the run it continues: those that decide which items
    a step sees and how each step updates the weights. Compared by `check_same_run`."""
    run = {k: getattr(cfg, k) for k in ("seed", "epochs", "batch_size", "grad_accum", "lr", "train_split",
                                        "rehearsal_ratio", "negatives", "train_token_rows", "weight_decay",
                                        "warmup_ratio", "clip_grad", "text_model", "text_train", "objective",
                                        "distill_weight", "augment", "augment_views")}
    run["lora_alpha"] = cfg.lora.alpha if cfg.lora is not None else None
    run["lora_dropout"] = cfg.lora.dropout if cfg.lora is not None else None
    run["lora_layers"] = cfg.lora.layers if cfg.lora is not None else None  # None (all) in older checkpoints too
    run["processes"] = processes
    return run


def check_same_run(folder: Path, saved: dict, run: dict) -> None:
    """Refuse, naming every flag that differs, to resume with settings that would not continue the saved run."""
    changed = [(f"number of processes {v} (was {saved.get(k)}: launch as many)" if k == "processes"
                else f"--{k.replace('_', '-')} {v} (was {saved.get(k)})") for k, v in run.items() if saved.get(k) != v]
    if changed:
        raise TurkclipError(f"cannot resume {folder} with other settings: {', '.join(changed)}; use the original flags")
