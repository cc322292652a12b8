"""Time and peak memory of a phase (targets, keys, solve, covariance, ...), into a timings dict.

Peak resident set size per phase: on Linux the kernel's high-water mark (VmHWM) is reset at the
start of a phase (writing 5 to /proc/self/clear_refs) and read at its end; elsewhere the
process's peak so far stands in (ru_maxrss, never reset). Resetting also lowers ru_maxrss, so
the process peak is `process_peak_rss_mb()`, the highest mark seen by any phase or now. On CUDA
the allocator's peak is reset and read the same way.

    with phase("targets", timings):
        ...
    timings == {"targets_s": 12.3, "targets_peak_rss_mb": 812.0}   # summed / maxed over calls
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_highest = 0.0  # MB: the process peak before the last reset


def current_peak_rss_mb() -> float:
    """The high-water mark of resident memory since the last reset (MB)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def process_peak_rss_mb() -> float:
    """Peak resident memory of this process over its whole life (MB)."""
    return max(_highest, current_peak_rss_mb())


def reset_peak_rss() -> None:
    global _highest
    _highest = process_peak_rss_mb()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:  # not Linux, or not allowed: the phase reports the process peak so far
        pass


@contextmanager
def phase(name: str, timings: dict | None, device: torch.device | None = None) -> Iterator[None]:
    """Add the block's seconds to timings[f"{name}_s"] and its peak memory to f"{name}_peak_rss_mb"
    (and f"{name}_peak_cuda_mb" on CUDA), the highest over repeated calls."""
    if timings is None:
        yield
        return
    cuda = device is not None and device.type == "cuda"
    reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[f"{name}_s"] = timings.get(f"{name}_s", 0.0) + time.perf_counter() - t0
        key = f"{name}_peak_rss_mb"
        timings[key] = max(timings.get(key, 0.0), round(current_peak_rss_mb(), 1))
        if cuda:
            key = f"{name}_peak_cuda_mb"
            timings[key] = max(timings.get(key, 0.0), round(torch.cuda.max_memory_allocated(device) / 2**20, 1))
