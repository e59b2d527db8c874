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
import tempfile
from pathlib import Path

import torch

from turkclip.errors import TurkclipError

SUBFOLDER = "checkpoint"
FILENAME = f"{SUBFOLDER}/checkpoint.pt"  # relative to the output folder


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save(folder: Path, model, optimizer, scheduler, position: dict) -> None:
    state = {
        "trainable": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "position": position,  # epoch, step_in_epoch, global_step, best, ...
    }
    (folder / SUBFOLDER).mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder / SUBFOLDER, prefix=".checkpoint-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, folder / FILENAME)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def move_legacy(folder: Path) -> None:
    """Runs from before the checkpoint/ subfolder kept checkpoint.pt beside the adapter: move it in, so that
    --resume continues them and a new run without --resume refuses them, as for any other run."""
    old = folder / "checkpoint.pt"
    if old.is_file() and not (folder / FILENAME).exists():
        (folder / SUBFOLDER).mkdir(exist_ok=True)
        os.replace(old, folder / FILENAME)


def load(folder: Path, model, optimizer, scheduler) -> dict:
    """Restore everything `save` wrote; returns the saved position."""
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
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["cpu"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["position"]
