"""Memory figures for the log: the process's resident set now and at its peak, and the accelerator's peak."""

from __future__ import annotations

import os
import resource

import torch

MIB = 1024 * 1024


def rss_mib() -> float:
    """Resident set size of this process now (Linux /proc; the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / MIB, 1)
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()


def peak_rss_mib() -> float:
    """The largest resident set size this process has had (ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def reset_accelerator_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def accelerator_peak_mib(device: torch.device) -> float | None:
    """Peak memory allocated by torch on the accelerator since the last reset; None on the CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / MIB, 1)
    return None
