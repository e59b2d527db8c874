"""Progress of long work (training, indexing, embedding, decoding), on a terminal and in a log file alike.

On a terminal: tqdm's bar. Written to a file or a pipe (a cluster job, `> log`): after 30 s, a plain line at most every
30 s — done/total, rate and time left — instead of a bar redrawn with carriage returns that a log shows as one
endless line, or no sign of life at all.
"""

from __future__ import annotations

import sys
from typing import Iterable

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0  # seconds between progress lines when not on a terminal


class _Lines:
    """A stream for tqdm that turns each redraw ("\\r...") into one line of its own."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable: Iterable | None = None, enabled: bool = True, **kw) -> tqdm:
    """`tqdm(iterable, **kw)`, or a disabled one when `enabled` is False; off a terminal, lines every 30 s."""
    if not enabled:
        return tqdm(iterable, disable=True, **kw)
    stream = kw.pop("file", sys.stderr)
    if stream.isatty():
        return tqdm(iterable, file=stream, **kw)
    kw.pop("leave", None)  # a log keeps every line anyway
    # delay: work done within 30 s prints nothing (a one-line error stays one line); longer work, a line every 30 s
    return tqdm(iterable, file=_Lines(stream), delay=LOG_INTERVAL, mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL,
                ascii=True, ncols=100, **kw)
