"""Energy per output token, and the GPU state a row was measured at.

A worker reads a cumulative energy counter right before and right after each timed run (after a
device sync, so the run's kernels are inside), and the GPU's state right after it:

- CUDA: NVML (`nvidia-ml-py`, imported here only), `nvmlDeviceGetTotalEnergyConsumption`: mJ
  since the driver loaded (Volta and later), for the whole board: another process on the same
  GPU counts too. State: SM and memory clocks (MHz), enforced power limit and power draw (W),
  temperature (C) and the clock-throttle reasons in effect. method `nvml_energy_counter`.
- CPU: RAPL through /sys/class/powercap (intel-rapl:N package domains, energy_uj, wrapping at
  max_energy_range_uj): the whole package, every process on it. method `rapl_powercap`. Most
  VMs expose none; then the energy columns stay empty and `energy_note` says why.

Per timed run: energy_j (counter difference) and the run's output tokens (static: batch x
new_tokens; online: the new tokens of its requests). The row's `energy_j_per_output_token` and
`output_tokens_per_j` are medians over runs, like the throughput columns, and the per-run values
go to the samples line under "runs", so `compare` pairs them by interleaved round like latency.
A counter that did not advance over a run (a run shorter than the counter's update period)
leaves that run's values out.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

POWERCAP = Path("/sys/class/powercap")
NVML_METHOD = "nvml_energy_counter"
RAPL_METHOD = "rapl_powercap"

# NVML clock-throttle reason bits (nvml.h, nvmlClocksEventReason*), named as nvidia-smi does.
THROTTLE_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap",
    0x8: "hw_slowdown", 0x10: "sync_boost", 0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def throttle_names(mask: int) -> list[str]:
    """NVML's throttle bit mask as names; unknown bits as hex, so nothing is dropped."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    return names + ([hex(rest)] if rest else [])


class Meter(Protocol):
    method: str

    def read_j(self) -> float:
        """The cumulative counter, in joules (only differences mean anything)."""
        ...

    def state(self) -> dict[str, Any]:
        """The device's state now (GPU_STATE columns it can fill)."""
        ...


class NvmlMeter:
    method = NVML_METHOD

    def __init__(self, nvml: Any, index: int) -> None:
        self._nvml = nvml
        self._h = nvml.nvmlDeviceGetHandleByIndex(index)
        nvml.nvmlDeviceGetTotalEnergyConsumption(self._h)  # raises where unsupported

    def read_j(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._h)) / 1e3  # mJ -> J

    def state(self) -> dict[str, Any]:
        n, h = self._nvml, self._h
        out: dict[str, Any] = {}
        # One unsupported reading (old board, vGPU) must not lose the others.
        readings: list[tuple[str, Callable[[], Any]]] = [
            ("gpu_sm_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            ("gpu_mem_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
            ("gpu_power_limit_w", lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3),
            ("gpu_power_draw_w", lambda: n.nvmlDeviceGetPowerUsage(h) / 1e3),
            ("gpu_temp_c", lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
            # Renamed "clocks event reasons" in newer NVML; the old name stays as an alias.
            ("gpu_throttle_mask", lambda: getattr(
                n, "nvmlDeviceGetCurrentClocksEventReasons",
                getattr(n, "nvmlDeviceGetCurrentClocksThrottleReasons", None))(h)),
        ]
        for name, read in readings:
            try:
                out[name] = read()
            except Exception:  # NVMLError_NotSupported and kin
                pass
        return out


class RaplMeter:
    method = RAPL_METHOD

    def __init__(self, domains: list[Path]) -> None:
        self._domains = domains
        self._last: list[int] = [self._raw(d) for d in domains]
        self._ranges = [self._range(d) for d in domains]
        self._total_uj = 0

    @staticmethod
    def _raw(d: Path) -> int:
        return int((d / "energy_uj").read_text().strip())

    @staticmethod
    def _range(d: Path) -> int:
        try:
            return int((d / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            return 0

    def read_j(self) -> float:
        """Sums the packages' counters, unwrapping each (it wraps at max_energy_range_uj)."""
        for i, d in enumerate(self._domains):
            now = self._raw(d)
            delta = now - self._last[i]
            if delta < 0 and self._ranges[i]:
                delta += self._ranges[i] + 1
            self._total_uj += max(delta, 0)
            self._last[i] = now
        return self._total_uj / 1e6

    def state(self) -> dict[str, Any]:
        return {}


def rapl_domains(root: Path = POWERCAP) -> list[Path]:
    """Top-level RAPL package domains (intel-rapl:N, not their sub-zones intel-rapl:N:M)."""
    if not root.is_dir():
        return []
    found = []
    for d in sorted(root.iterdir()):
        parts = d.name.split(":")
        if len(parts) == 2 and parts[0] in ("intel-rapl", "amd-rapl") and \
                (d / "energy_uj").is_file():
            found.append(d)
    return found


def open_meter(device: str, powercap: Path = POWERCAP,
               nvml_module: Callable[[], Any] | None = None) -> tuple[Meter | None, str]:
    """(meter, "") or (None, why there is no energy reading here)."""
    if device.startswith("cuda"):
        try:
            nvml = nvml_module() if nvml_module is not None else _import_nvml()
            nvml.nvmlInit()
            index = int(device.partition(":")[2] or _torch_index())
            return NvmlMeter(nvml, _nvml_index(index)), ""
        except ImportError:
            return None, "NVML not available (pip install nvidia-ml-py)"
        except Exception as exc:
            return None, f"NVML energy counter unavailable ({type(exc).__name__}: {exc})"
    domains = rapl_domains(powercap)
    if not domains:
        return None, f"no RAPL counters under {powercap} (common on VMs)"
    try:
        return RaplMeter(domains), ""
    except (OSError, ValueError) as exc:
        return None, f"RAPL counters unreadable ({exc}; often root-only)"


def _import_nvml() -> Any:
    import pynvml  # the nvidia-ml-py distribution

    return pynvml


def _torch_index() -> int:
    import torch

    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def _nvml_index(torch_index: int) -> int:
    """NVML counts every GPU on the board; torch counts CUDA_VISIBLE_DEVICES. Map the first
    plain integer list (the common case); otherwise trust the torch index."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [x.strip() for x in visible.split(",") if x.strip()]
    if ids and all(x.isdigit() for x in ids) and torch_index < len(ids):
        return int(ids[torch_index])
    return torch_index


@dataclass
class EnergyLog:
    """Per timed run: joules and the device state after it. Filled by the worker."""

    meter: Meter | None
    reason: str
    energy_j: list[float | None] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    _start: float | None = None

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        end = self._read()
        used = None if self._start is None or end is None else end - self._start
        self.energy_j.append(used if used is not None and used > 0 else None)
        if self.meter is not None:
            try:
                self.states.append(self.meter.state())
            except Exception:
                pass

    def _read(self) -> float | None:
        if self.meter is None:
            return None
        try:
            return self.meter.read_j()
        except Exception:
            return None

    def finish(self, tokens: list[int], run_s: list[float], row: dict[str, Any],
               samples: dict[str, Any]) -> None:
        """Energy and state columns into the row (why energy is missing: `energy_note`),
        per-run values into samples['runs']."""
        row.update(state_columns(self.states))
        if self.meter is None:
            row["energy_note"] = self.reason
            return
        row["energy_method"] = self.meter.method
        per_token: list[float | None] = []
        per_j: list[float | None] = []
        for e, n in zip(self.energy_j, tokens):
            per_token.append(e / n if e and n else None)
            per_j.append(n / e if e and n else None)
        good = [x for x in per_token if x is not None]
        if not good:
            row["energy_note"] = (f"the {self.meter.method} counter did not advance over any "
                                  "timed run (runs shorter than its update period)")
            return
        if len(good) < len(per_token):
            row["energy_note"] = (f"{len(per_token) - len(good)} of {len(per_token)} runs left "
                                  "out (counter did not advance); no per-run samples")
        used = [e for e in self.energy_j if e]
        seconds = sum(s for e, s in zip(self.energy_j, run_s) if e)
        row["energy_j"] = round(sum(used), 4)
        row["power_w_mean"] = round(sum(used) / seconds, 2) if seconds > 0 else ""
        row["energy_j_per_output_token"] = round(statistics.median(good), 9)
        row["output_tokens_per_j"] = round(statistics.median(
            [x for x in per_j if x is not None]), 4)
        if len(good) == len(per_token):  # per-run values line up with runs['round']
            runs = samples.setdefault("runs", {})
            runs["energy_j_per_output_token"] = per_token
            runs["output_tokens_per_j"] = per_j


def state_columns(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The worst state over the timed runs: lowest clocks, highest draw and temperature, every
    throttle reason seen; the power limit as last read."""
    out: dict[str, Any] = {}

    def pick(key: str, col: str, how: Callable[[list[Any]], Any]) -> None:
        values = [s[key] for s in states if key in s]
        if values:
            out[col] = how(values)

    pick("gpu_sm_clock_mhz", "gpu_sm_clock_mhz_min", min)
    pick("gpu_mem_clock_mhz", "gpu_mem_clock_mhz_min", min)
    pick("gpu_power_limit_w", "gpu_power_limit_w", lambda v: round(v[-1], 1))
    pick("gpu_power_draw_w", "gpu_power_draw_w_max", lambda v: round(max(v), 1))
    pick("gpu_temp_c", "gpu_temp_c_max", max)
    masks = [s["gpu_throttle_mask"] for s in states if "gpu_throttle_mask" in s]
    if masks:
        seen: list[str] = []
        for m in masks:
            seen += [n for n in throttle_names(int(m)) if n not in seen]
        out["gpu_throttle_reasons"] = "|".join(seen) or "none"
    return out


def output_tokens_per_run(workload: dict[str, Any], samples: dict[str, Any]) -> list[int]:
    """Output tokens of each timed run, in run order: static rows batch_size x new_tokens;
    online rows the new tokens of the requests served in that run (round)."""
    rounds = (samples.get("runs") or {}).get("round") or []
    requests = samples.get("requests")
    if requests:
        by_round: dict[int, int] = {}
        for r in requests:
            by_round[r["round"]] = by_round.get(r["round"], 0) + int(r.get("new_tokens") or 0)
        return [by_round.get(rnd, 0) for rnd in rounds]
    per_run = int(workload.get("batch_size", 1)) * int(workload.get("new_tokens", 0))
    return [per_run] * len(rounds)
