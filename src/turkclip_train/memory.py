"""Give freed memory back to the OS (glibc): keeps a long run's RSS at its real working set.

glibc serves large allocations with mmap and returns them on free, but it raises that threshold every
time such a block is freed (up to 32 MB). After a few batches, tensors of 1–32 MB (activations, a batch's
pixels) come from the heap instead, and a heap fragments: the peak RSS of embedding 100 000 images into
the bank grew from 535 MB to 2.5 GB. A fixed 1 MB threshold keeps those tensors on mmap: the same pass
stays flat (bench/RESULTS.md, "data larger than memory"), at no measurable cost in steps per second.
Equivalent to MALLOC_MMAP_THRESHOLD_=1048576 in the environment, which, if set, is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD = 1 << 20


def release_freed_memory() -> bool:
    """Fix glibc's mmap threshold at 1 MB; True when set (False off glibc or when the user chose one)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt): nothing to do
        return False
