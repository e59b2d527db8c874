"""glibc's mmap threshold is fixed by turkclip's entry points, unless the user set one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from turkclip_train import memory


def test_threshold_is_set_once_and_a_user_choice_is_kept(monkeypatch):
    import ctypes.util

    if not ctypes.util.find_library("c") or sys.platform != "linux":
        pytest.skip("glibc's mallopt is Linux-only")
    assert memory.release_freed_memory() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert memory.release_freed_memory() is False


def test_the_fixed_threshold_keeps_large_freed_blocks_off_the_heap():
    """After big blocks are freed, glibc (by default) raises its threshold and a 4 MB block lands on the heap;
    with the threshold fixed it is mmapped and its memory goes back to the OS when freed."""
    if sys.platform != "linux":
        pytest.skip("Linux only")
    code = """
import ctypes, ctypes.util, sys
libc = ctypes.CDLL(ctypes.util.find_library("c"))
if sys.argv[1] == "fixed":
    from turkclip_train.memory import release_freed_memory
    assert release_freed_memory()
libc.malloc.restype = ctypes.c_void_p
libc.free(ctypes.c_void_p(libc.malloc(16 << 20)))  # frees an mmapped 16 MB block: glibc raises its threshold
def rss():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1])
before = rss()
blocks = [libc.malloc(4 << 20) for _ in range(32)]
for b in blocks:
    ctypes.memset(b, 1, 4 << 20)
for b in blocks[:-1]:  # free all but the last: a heap cannot shrink below the last block
    libc.free(ctypes.c_void_p(b))
print(rss() - before)
"""
    grown = {}
    for mode in ("default", "fixed"):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
        grown[mode] = int(out.stdout.strip().splitlines()[-1])  # KiB still resident after the frees
    assert grown["default"] > 64 * 1024  # the freed 124 MB stayed in the heap
    assert grown["fixed"] < 16 * 1024  # only the live 4 MB block
