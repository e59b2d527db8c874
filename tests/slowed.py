"""Run the `turkclip` command line with a pause after every call of some of its functions: how the tests interrupt
a run part-way (SIGKILL, Ctrl-C) with no test hook inside turkclip.

    python tests/slowed.py SECONDS MODULE:FUNCTION[,MODULE:FUNCTION...] TURKCLIP-ARGUMENTS...

e.g. `turkclip_train.checkpoint:save` (training: a pause after each checkpoint) or
`turkclip.search.photo_index:_save_chunk` (indexing: after each chunk). Under torchrun it is the training script
(`command()` without the interpreter): every process wraps the functions before the command starts.
"""

from __future__ import annotations

import functools
import importlib
import sys
import time
from pathlib import Path


def command(seconds: float, *functions: str) -> list[str]:
    """The arguments that run this script (after `python`, or as torchrun's script) before turkclip's own."""
    return [str(Path(__file__).resolve()), str(seconds), ",".join(functions)]


def slow_down(function: str, seconds: float) -> None:
    module_name, name = function.split(":")
    module = importlib.import_module(module_name)
    real = getattr(module, name)

    @functools.wraps(real)
    def slowed(*args, **kwargs):
        result = real(*args, **kwargs)
        time.sleep(seconds)
        return result

    setattr(module, name, slowed)


if __name__ == "__main__":
    seconds, functions, *argv = sys.argv[1:]
    for function in functions.split(","):
        slow_down(function, float(seconds))
    from turkclip_train.cli import main

    sys.exit(main(argv))
