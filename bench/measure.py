"""Measuring helpers shared by the benchmark's modes: memory, step rates, the caption file."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import psutil
import torch


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """High-water mark of this process's RSS (since start, or since `reset_peak`)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform.startswith("linux") else peak / 2**20


def reset_peak() -> bool:
    """Restart the RSS high-water mark (Linux), so a phase's peak can be told from setup's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory(device: torch.device) -> dict:
    out = {"rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def rate(durations: list[float], pairs: list[int], warmup: int) -> dict:
    """Pairs per second over the steps after the warm-up ones."""
    timed_s, timed_pairs = sum(durations[warmup:]), sum(pairs[warmup:])
    return {"pairs_per_s": timed_pairs / timed_s if timed_s else float("nan"), "timed_steps": len(durations) - warmup,
            "timed_pairs": timed_pairs, "step_s": durations}


def train_captions(captions: str) -> list[tuple[str, list[str]]]:
    """(filename, captions) of the train split, in file order."""
    doc = json.loads(Path(captions).read_text(encoding="utf-8"))
    return [(im["filename"], [s["raw"] for s in im["sentences"]]) for im in doc["images"] if im["split"] == "train"]




def cpu_name() -> str:
    """The CPU's model name (Linux), else the architecture: what a report's machine line says."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.machine()
