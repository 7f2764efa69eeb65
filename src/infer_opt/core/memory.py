"""Memory of the cell's process and of its KV cache.

- Peak memory of the cell: RSS on CPU (VmHWM since the worker's reset), allocated device memory
  on CUDA. A worker's peak depends on its history (what earlier workloads left in the
  allocator), so a single peak figure does not repeat from run to run.
- What one timed run adds (RunMemory): the peak resident memory during the run minus the
  resident memory just before it, measured around every timed run; its median and bootstrap
  interval over the runs is a figure identical code reproduces, with its spread known.
- The KV cache as an engine stored it (KVMemory): element type, bytes per token, allocated and
  used bytes (engines fill it from their own cache objects: Engine.kv_memory).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

from infer_opt.core.stats import bootstrap_median

# VmHWM seen just before a per-run reset (RunMemory): peak_rss_mb() keeps counting it, so the
# cell's peak stays the whole workload's even though each run restarts the kernel's count.
_carried_peak_mb = 0.0


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _clear_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # Linux: VmHWM restarts from the current RSS
    except OSError:
        pass


def _vm_hwm_mb() -> float:
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


def reset_peak_rss() -> None:
    """Linux: restart the peak-RSS count (VmHWM) of this process, so one worker that serves
    several workloads reports each one's own peak. Elsewhere the peak stays process-wide."""
    global _carried_peak_mb
    _carried_peak_mb = 0.0
    _clear_peak()


def peak_rss_mb() -> float:
    """Peak resident memory since the process started or since reset_peak_rss()."""
    return max(_vm_hwm_mb(), _carried_peak_mb)


@dataclass
class RunMemory:
    """Resident memory each timed run adds: peak during it minus RSS before it (MiB)."""

    added_mb: list[float] = field(default_factory=list)

    @contextmanager
    def measure(self) -> Iterator[None]:
        global _carried_peak_mb
        _carried_peak_mb = max(_carried_peak_mb, _vm_hwm_mb())
        before = rss_mb()
        _clear_peak()
        yield
        # Without /proc/self/clear_refs the peak is process-wide and only bounds the run.
        self.added_mb.append(max(_vm_hwm_mb() - before, 0.0))

    def columns(self) -> dict[str, float | str]:
        """run_added_mb_p50 and its 95% bootstrap interval (empty below two runs)."""
        if not self.added_mb:
            return {}
        mid, lo, hi = bootstrap_median(self.added_mb)
        return {"run_added_mb_p50": round(mid, 1),
                "run_added_mb_ci_low": "" if lo is None else round(lo, 1),
                "run_added_mb_ci_high": "" if hi is None else round(hi, 1)}


@dataclass(frozen=True)
class KVMemory:
    """The KV cache of a batch as stored: all layers, K and V, every row."""

    dtype: str  # what one cached value is stored as, e.g. "float32", "int8 (hqq, group 64)"
    bytes_per_token: float  # per sequence, all layers, K and V, scales included
    allocated_bytes: int  # what the cache holds in memory (a static cache: all its slots)
    used_bytes: int  # the slots holding tokens

    def columns(self) -> dict[str, float | str]:
        return {"kv_dtype": self.dtype, "kv_bytes_per_token": round(self.bytes_per_token, 3),
                "kv_allocated_mb": round(self.allocated_bytes / 2**20, 3),
                "kv_used_mb": round(self.used_bytes / 2**20, 3)}


def reset_device_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_device_mb(device: str) -> float | None:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return None
