"""Noise telemetry: what else the machine was doing while a cell was timed.

A shared machine moves timings by more than most optimizations change them. Each row records,
over its measuring interval (Telemetry.start() ... .stop()):

- load_avg_1m_start / _end: the kernel's 1-minute load average (/proc/loadavg);
- cpu_steal_pct: % of all CPU time the hypervisor gave to other guests (/proc/stat "steal");
- other_cpu_pct: CPU time used by every process outside this process tree, in % of the
  interval x cores: busy time from /proc/stat minus this process's own and its children's CPU
  time (psutil);
- torch_threads_in_effect: torch.get_num_threads() at the end, the count that really ran;
- cpu_mhz: mean "cpu MHz" over /proc/cpuinfo (psutil.cpu_freq() elsewhere; empty if neither);
- machine_busy: True when other processes used more than a quarter of one core on average
  (other_cpu_pct x cores / 100 > BUSY_OTHER_CORES) or steal exceeded BUSY_STEAL_PCT; empty when
  /proc/stat is unreadable. A quarter core is well above what an idle Linux box uses (a few %
  of one core) and enough, on a small machine whose cores the cell's threads all use, to
  preempt them every scheduling period: the row's timings include someone else's work.

/proc/stat counts in clock ticks (USER_HZ, usually 100 per second), so an interval shorter
than a few ticks has no telemetry; the parsing functions are pure and tested on literal text.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
BUSY_OTHER_CORES = 0.25  # other processes' average CPU use, in cores, above which a row is busy
BUSY_STEAL_PCT = 5.0  # hypervisor steal, % of all CPU time, above which a row is busy


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate "cpu" line of /proc/stat, in clock ticks since boot, all cores summed."""

    busy: int  # user + nice + system + irq + softirq (guest time is already inside user/nice)
    idle: int  # idle + iowait
    steal: int
    cores: int  # "cpuN" lines: the CPUs these times are summed over

    @property
    def total(self) -> int:
        return self.busy + self.idle + self.steal


def parse_proc_stat(text: str) -> CpuTimes:
    """CpuTimes from the text of /proc/stat; ValueError when it has no aggregate cpu line."""
    fields: list[int] | None = None
    cores = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == "cpu":
            # user nice system idle iowait irq softirq steal [guest guest_nice]; old kernels
            # stop earlier, so missing trailing fields count as 0.
            fields = [int(x) for x in rest.split()][:8]
            fields += [0] * (8 - len(fields))
        elif name.startswith("cpu") and name[3:].isdigit():
            cores += 1
    if fields is None:
        raise ValueError("no aggregate 'cpu' line in /proc/stat text")
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return CpuTimes(busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal,
                    cores=max(cores, 1))


def parse_loadavg(text: str) -> float:
    """The 1-minute load average: the first field of /proc/loadavg."""
    return float(text.split()[0])


def parse_cpu_mhz(text: str) -> float | None:
    """Mean of the "cpu MHz" lines of /proc/cpuinfo; None when there are none (e.g. arm64)."""
    mhz = [float(v) for k, _, v in (line.partition(":") for line in text.splitlines())
           if k.strip() == "cpu MHz" and v.strip()]
    return sum(mhz) / len(mhz) if mhz else None


def is_busy(other_cpu_pct: float, steal_pct: float, cores: int) -> bool:
    """The machine_busy rule (module docstring)."""
    return other_cpu_pct / 100.0 * cores > BUSY_OTHER_CORES or steal_pct > BUSY_STEAL_PCT


def interval_columns(start: CpuTimes, end: CpuTimes, own_cpu_s: float, tick_hz: float
                     ) -> dict[str, Any]:
    """cpu_steal_pct, other_cpu_pct and machine_busy over start..end; own_cpu_s is this
    process tree's CPU seconds in the interval. Empty values for an interval under one tick."""
    d_total = end.total - start.total
    if d_total <= 0:
        return {"cpu_steal_pct": "", "other_cpu_pct": "", "machine_busy": ""}
    # Interval x cores, measured by the same counters as the busy time it divides.
    capacity_s = d_total / tick_hz
    other_s = max(0.0, (end.busy - start.busy) / tick_hz - own_cpu_s)
    steal_pct = 100.0 * (end.steal - start.steal) / d_total
    other_pct = 100.0 * other_s / capacity_s
    return {"cpu_steal_pct": round(steal_pct, 2), "other_cpu_pct": round(other_pct, 2),
            "machine_busy": is_busy(other_pct, steal_pct, end.cores)}


# --- reading the live machine ----------------------------------------------------------------

def _read(proc: Path, name: str) -> str | None:
    try:
        return (proc / name).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_cpu_times(proc: Path = PROC) -> CpuTimes | None:
    text = _read(proc, "stat")
    try:
        return None if text is None else parse_proc_stat(text)
    except ValueError:
        return None


def read_loadavg(proc: Path = PROC) -> float | str:
    text = _read(proc, "loadavg")
    if text is not None:
        return parse_loadavg(text)
    try:
        return os.getloadavg()[0]
    except OSError:
        return ""


def read_cpu_mhz(proc: Path = PROC) -> float | str:
    text = _read(proc, "cpuinfo")
    mhz = parse_cpu_mhz(text) if text is not None else None
    if mhz is None:
        import psutil

        freq = psutil.cpu_freq()
        mhz = freq.current if freq is not None and freq.current else None
    return "" if mhz is None else round(mhz, 1)


def own_cpu_s() -> float:
    """CPU seconds of this process, its reaped children and its live descendants."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:  # exited between listing and reading
            pass
    return total


def _torch_threads() -> int | str:
    try:
        import torch
    except ImportError:
        return ""
    return torch.get_num_threads()


def tick_hz() -> float:
    return float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


class Telemetry:
    """start() where a cell (or worker) starts measuring, stop() -> row columns (schema.TELEMETRY).

    proc, own_cpu and torch_threads are injectable so tests run on literal /proc text.
    """

    def __init__(self, proc: Path = PROC, own_cpu: Callable[[], float] = own_cpu_s,
                 torch_threads: Callable[[], int | str] = _torch_threads) -> None:
        self._proc = proc
        self._own_cpu = own_cpu
        self._torch_threads = torch_threads
        self._load_start: float | str = ""
        self._cpu_start: CpuTimes | None = None
        self._own_start = 0.0

    def start(self) -> Telemetry:
        self._load_start = read_loadavg(self._proc)
        self._cpu_start = read_cpu_times(self._proc)
        self._own_start = self._own_cpu()
        return self

    def stop(self) -> dict[str, Any]:
        own = self._own_cpu() - self._own_start
        end = read_cpu_times(self._proc)
        cols: dict[str, Any] = {"load_avg_1m_start": self._load_start,
                                "load_avg_1m_end": read_loadavg(self._proc)}
        if self._cpu_start is not None and end is not None:
            cols.update(interval_columns(self._cpu_start, end, own, tick_hz()))
        else:
            cols.update(cpu_steal_pct="", other_cpu_pct="", machine_busy="")
        cols["torch_threads_in_effect"] = self._torch_threads()
        cols["cpu_mhz"] = read_cpu_mhz(self._proc)
        return cols


def machine_busy_now(seconds: float = 1.0, proc: Path = PROC,
                     sleep: Callable[[float], None] = time.sleep,
                     own_cpu: Callable[[], float] = own_cpu_s) -> str | None:
    """A one-line warning when the machine is busy right now (watched for `seconds`), else
    None; None too where /proc/stat cannot be read. For the start of a run."""
    start, own0 = read_cpu_times(proc), own_cpu()
    sleep(seconds)
    end, own1 = read_cpu_times(proc), own_cpu()
    if start is None or end is None:
        return None
    cols = interval_columns(start, end, own1 - own0, tick_hz())
    if cols["machine_busy"] is not True:
        return None
    cores = cols["other_cpu_pct"] / 100.0 * end.cores
    return (f"machine busy: other processes used {cores:.2f} of {end.cores} cores and steal was "
            f"{cols['cpu_steal_pct']:.1f}% over the last {seconds:g} s; timings will be noisy "
            f"(rows measured like this are marked busy)")
