"""Peak memory of the cell's process: RSS on CPU, allocated device memory on CUDA."""

from __future__ import annotations

import resource
import sys

import psutil


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def reset_peak_rss() -> None:
    """Linux: restart the peak-RSS count (VmHWM) of this process, so one worker that serves
    several workloads reports each one's own peak. Elsewhere the peak stays process-wide."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory since the process started or since reset_peak_rss()."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def reset_device_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_device_mb(device: str) -> float | None:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return None
