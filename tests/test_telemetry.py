"""Noise telemetry from literal /proc text: parsing, the busy rule, and the row columns."""

from __future__ import annotations

from pathlib import Path

import pytest

from infer_opt.core import telemetry
from infer_opt.core.telemetry import (
    CpuTimes,
    Telemetry,
    interval_columns,
    is_busy,
    machine_busy_now,
    parse_cpu_mhz,
    parse_loadavg,
    parse_proc_stat,
)
from infer_opt.format.columns import TELEMETRY

STAT = """cpu  {user} 0 {system} {idle} 10 0 5 {steal} 0 0
cpu0 1 0 1 1 0 0 0 0 0 0
cpu1 1 0 1 1 0 0 0 0 0 0
intr 12345 0 0
ctxt 999
"""
CPUINFO = """processor\t: 0
cpu MHz\t\t: 2000.000
processor\t: 1
cpu MHz\t\t: 3000.500
"""


def stat(user: int, system: int, idle: int, steal: int = 0) -> str:
    return STAT.format(user=user, system=system, idle=idle, steal=steal)


def test_parse_proc_stat() -> None:
    t = parse_proc_stat(stat(user=100, system=50, idle=1000, steal=7))
    # busy = user + nice + system + irq + softirq = 100 + 0 + 50 + 0 + 5; idle += iowait 10
    assert t == CpuTimes(busy=155, idle=1010, steal=7, cores=2)
    assert t.total == 1172
    old_kernel = parse_proc_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\n")  # no steal field at all
    assert old_kernel == CpuTimes(busy=6, idle=4, steal=0, cores=1)
    with pytest.raises(ValueError):
        parse_proc_stat("intr 1\n")


def test_parse_loadavg_and_mhz() -> None:
    assert parse_loadavg("0.52 0.40 0.33 1/123 4567\n") == 0.52
    assert parse_cpu_mhz(CPUINFO) == pytest.approx(2500.25)
    assert parse_cpu_mhz("processor : 0\nBogoMIPS : 50\n") is None


def test_interval_columns_by_hand() -> None:
    start = CpuTimes(busy=1000, idle=5000, steal=0, cores=2)
    # 2 s on 2 cores at 100 ticks/s = 400 ticks: 150 busy (1.5 core-s), 240 idle, 10 steal.
    end = CpuTimes(busy=1150, idle=5240, steal=10, cores=2)
    cols = interval_columns(start, end, own_cpu_s=1.0, tick_hz=100.0)
    # others: 1.5 - 1.0 = 0.5 core-s of 4 core-s = 12.5%, i.e. a quarter core on average.
    assert cols == {"cpu_steal_pct": 2.5, "other_cpu_pct": 12.5, "machine_busy": False}
    cols = interval_columns(start, end, own_cpu_s=0.9, tick_hz=100.0)  # 0.6 core-s: busy
    assert cols["other_cpu_pct"] == 15.0 and cols["machine_busy"] is True
    # Our own time can exceed the kernel's tick-rounded busy time: never negative.
    assert interval_columns(start, end, 5.0, 100.0)["other_cpu_pct"] == 0.0
    assert interval_columns(start, start, 0.0, 100.0) == {
        "cpu_steal_pct": "", "other_cpu_pct": "", "machine_busy": ""}


def test_busy_rule() -> None:
    assert not is_busy(other_cpu_pct=12.5, steal_pct=0.0, cores=2)  # exactly 0.25 core
    assert is_busy(other_cpu_pct=12.6, steal_pct=0.0, cores=2)
    assert is_busy(other_cpu_pct=0.0, steal_pct=5.1, cores=2)
    assert not is_busy(other_cpu_pct=3.0, steal_pct=5.0, cores=8)  # 0.24 core


def fake_proc(tmp: Path, stat_text: str, load: str = "1.50 1.0 1.0 1/1 1\n") -> Path:
    tmp.mkdir(exist_ok=True)
    (tmp / "stat").write_text(stat_text)
    (tmp / "loadavg").write_text(load)
    (tmp / "cpuinfo").write_text(CPUINFO)
    return tmp


def test_telemetry_start_stop_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "tick_hz", lambda: 100.0)
    proc = fake_proc(tmp_path / "proc", stat(user=1000, system=0, idle=5000))
    own = iter([10.0, 10.2])  # this process used 0.2 CPU s between start and stop
    t = Telemetry(proc=proc, own_cpu=lambda: next(own), torch_threads=lambda: 2).start()
    # 1 s on 2 cores = 200 ticks: 100 busy (1.0 core-s, 0.8 of it someone else's), 100 idle.
    fake_proc(proc, stat(user=1100, system=0, idle=5100), load="2.25 1.0 1.0 1/1 1\n")
    cols = t.stop()
    assert list(cols) == ["load_avg_1m_start", "load_avg_1m_end", "cpu_steal_pct",
                          "other_cpu_pct", "machine_busy", "torch_threads_in_effect", "cpu_mhz"]
    assert set(cols) == set(TELEMETRY)
    assert cols == {"load_avg_1m_start": 1.5, "load_avg_1m_end": 2.25, "cpu_steal_pct": 0.0,
                    "other_cpu_pct": 40.0, "machine_busy": True, "torch_threads_in_effect": 2,
                    "cpu_mhz": 2500.2}


def test_telemetry_without_proc_leaves_columns_empty(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry.os, "getloadavg", lambda: (0.75, 0.0, 0.0))
    t = Telemetry(proc=tmp_path / "missing", own_cpu=lambda: 0.0, torch_threads=lambda: 1)
    cols = t.start().stop()
    assert cols["machine_busy"] == "" and cols["other_cpu_pct"] == ""
    assert cols["load_avg_1m_start"] == 0.75


def test_machine_busy_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "tick_hz", lambda: 100.0)
    proc = fake_proc(tmp_path / "proc", stat(user=1000, system=0, idle=5000))

    def busy_second(seconds: float) -> None:  # another process used 1.5 cores meanwhile
        fake_proc(proc, stat(user=1150, system=0, idle=5050))

    def idle_second(seconds: float) -> None:
        fake_proc(proc, stat(user=1001, system=0, idle=5199))

    warning = machine_busy_now(1.0, proc=proc, sleep=busy_second, own_cpu=lambda: 0.0)
    assert warning == ("machine busy: other processes used 1.50 of 2 cores and steal was 0.0% "
                       "over the last 1 s; timings will be noisy (rows measured like this are "
                       "marked busy)")
    fake_proc(proc, stat(user=1000, system=0, idle=5000))
    assert machine_busy_now(1.0, proc=proc, sleep=idle_second, own_cpu=lambda: 0.0) is None
    assert machine_busy_now(0.0, proc=tmp_path / "missing", sleep=lambda s: None) is None
