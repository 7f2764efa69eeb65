"""Energy per output token and GPU state (core/energy.py), through a fake NVML module and a fake
/sys/class/powercap tree; then end to end on the tiny model."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from infer_opt.core import energy
from infer_opt.core.energy import (
    EnergyLog,
    open_meter,
    output_tokens_per_run,
    throttle_names,
)


class FakeNvml(types.SimpleNamespace):
    """What pynvml offers that core/energy.py calls; the energy counter advances 1500 mJ per
    reading, state readings come from `state` (a missing key raises NotSupported)."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, state: dict[str, Any], energy_step_mj: int = 1500) -> None:
        super().__init__()
        self.state = state
        self.mj = 10_000
        self.step = energy_step_mj
        self.inits = 0
        self.handles: list[int] = []

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        self.handles.append(i)
        return f"gpu{i}"

    def nvmlDeviceGetTotalEnergyConsumption(self, h: str) -> int:
        self.mj += self.step
        return self.mj

    def _get(self, key: str) -> Any:
        if key not in self.state:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        value = self.state[key]
        return value.pop(0) if isinstance(value, list) else value

    def nvmlDeviceGetClockInfo(self, h: str, which: int) -> int:
        return self._get("sm" if which == self.NVML_CLOCK_SM else "mem")

    def nvmlDeviceGetEnforcedPowerLimit(self, h: str) -> int:
        return self._get("limit_mw")

    def nvmlDeviceGetPowerUsage(self, h: str) -> int:
        return self._get("draw_mw")

    def nvmlDeviceGetTemperature(self, h: str, sensor: int) -> int:
        return self._get("temp")

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: str) -> int:
        return self._get("throttle")


def test_throttle_names() -> None:
    assert throttle_names(0) == []
    assert throttle_names(0x1 | 0x4) == ["gpu_idle", "sw_power_cap"]
    assert throttle_names(0x40 | 0x10000) == ["hw_thermal_slowdown", "0x10000"]


def test_nvml_energy_and_state_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml({"sm": [1980, 1755], "mem": 2619, "limit_mw": 700_000,
                     "draw_mw": [310_500, 402_250], "temp": [41, 44], "throttle": [0x0, 0x4]})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    meter, why = open_meter("cuda:1", nvml_module=lambda: fake)
    assert why == "" and meter is not None and meter.method == "nvml_energy_counter"
    assert fake.handles == [5]  # torch's cuda:1 is the board's GPU 5
    log = EnergyLog(meter, why)
    for _ in range(2):
        log.start()
        log.stop()
    assert log.energy_j == [1.5, 1.5]  # one counter step (1500 mJ) per run
    row: dict[str, Any] = {}
    samples: dict[str, Any] = {"runs": {"round": [0, 1]}}
    log.finish([64, 32], [0.5, 0.25], row, samples)
    assert "energy_note" not in row
    assert row["energy_method"] == "nvml_energy_counter"
    assert row["energy_j"] == 3.0
    assert row["power_w_mean"] == 4.0  # 3 J over 0.75 s
    assert row["energy_j_per_output_token"] == pytest.approx((1.5 / 64 + 1.5 / 32) / 2)
    assert row["output_tokens_per_j"] == pytest.approx((64 / 1.5 + 32 / 1.5) / 2)
    assert samples["runs"]["energy_j_per_output_token"] == [1.5 / 64, 1.5 / 32]
    assert samples["runs"]["output_tokens_per_j"] == [64 / 1.5, 32 / 1.5]
    assert row["gpu_sm_clock_mhz_min"] == 1755 and row["gpu_mem_clock_mhz_min"] == 2619
    assert row["gpu_power_limit_w"] == 700.0 and row["gpu_power_draw_w_max"] == 402.2
    assert row["gpu_temp_c_max"] == 44 and row["gpu_throttle_reasons"] == "sw_power_cap"


def test_nvml_unsupported_readings_are_left_empty() -> None:
    fake = FakeNvml({"sm": 1410})
    meter, _ = open_meter("cuda", nvml_module=lambda: fake)
    assert meter is not None
    assert meter.state() == {"gpu_sm_clock_mhz": 1410}


def test_a_counter_that_does_not_advance_gives_no_energy() -> None:
    meter, _ = open_meter("cuda:0", nvml_module=lambda: FakeNvml({}, energy_step_mj=0))
    log = EnergyLog(meter, "")
    log.start()
    log.stop()
    row: dict[str, Any] = {}
    log.finish([8], [0.01], row, {"runs": {"round": [0]}})
    assert "energy_j_per_output_token" not in row and row["energy_method"] == "nvml_energy_counter"
    assert "did not advance" in row["energy_note"]


def test_no_nvml_module_is_a_reason_not_a_failure() -> None:
    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")

    meter, why = open_meter("cuda", nvml_module=missing)
    assert meter is None and "nvidia-ml-py" in why
    row: dict[str, Any] = {}
    log = EnergyLog(meter, why)
    log.start()
    log.stop()
    log.finish([8], [0.1], row, {})
    assert row == {"energy_note": why}


def _powercap(root: Path, packages: dict[str, tuple[int, int]]) -> Path:
    """A fake /sys/class/powercap: {zone: (energy_uj, max_energy_range_uj)} plus a sub-zone."""
    for zone, (uj, rng) in packages.items():
        d = root / zone
        d.mkdir(parents=True)
        (d / "energy_uj").write_text(f"{uj}\n")
        (d / "max_energy_range_uj").write_text(f"{rng}\n")
        sub = root / f"{zone}:0"  # core sub-zone: inside the package, never summed twice
        sub.mkdir()
        (sub / "energy_uj").write_text("123\n")
    return root


def test_rapl_sums_packages_and_unwraps(tmp_path: Path) -> None:
    root = _powercap(tmp_path / "powercap", {"intel-rapl:0": (1_000_000, 2_000_000),
                                             "intel-rapl:1": (5_000, 2_000_000)})
    assert [d.name for d in energy.rapl_domains(root)] == ["intel-rapl:0", "intel-rapl:1"]
    meter, why = open_meter("cpu", powercap=root)
    assert why == "" and meter is not None and meter.method == "rapl_powercap"
    log = EnergyLog(meter, why)
    log.start()
    # Package 0 wraps: 1_000_000 -> 1_999_999 -> 500_000 is 1_500_000 uJ; package 1 +250_000.
    (root / "intel-rapl:0" / "energy_uj").write_text("500000\n")
    (root / "intel-rapl:1" / "energy_uj").write_text("255000\n")
    log.stop()
    assert log.energy_j == [pytest.approx(1.5 + 0.25)]


def test_no_powercap_leaves_energy_empty_with_the_reason(tmp_path: Path) -> None:
    meter, why = open_meter("cpu", powercap=tmp_path / "absent")
    assert meter is None and "no RAPL counters" in why


def test_output_tokens_per_run() -> None:
    static = {"kind": "static-batch", "batch_size": 4, "new_tokens": 16}
    assert output_tokens_per_run(static, {"runs": {"round": [3, 7]}}) == [64, 64]
    online = {"kind": "online"}
    samples = {"runs": {"round": [0, 1]},
               "requests": [{"round": 0, "new_tokens": 5}, {"round": 1, "new_tokens": 7},
                            {"round": 0, "new_tokens": 3}]}
    assert output_tokens_per_run(online, samples) == [8, 7]


def test_energy_compares_like_latency() -> None:
    from infer_opt.format.columns import COLUMNS, direction, is_timed
    from infer_opt.format.samples import metric_samples
    from infer_opt.results.compare.gate import gate_threshold

    assert direction("energy_j_per_output_token") == "lower"
    assert direction("output_tokens_per_j") == "higher"
    assert direction("gpu_sm_clock_mhz_min") is None and direction("energy_j") is None
    assert is_timed("energy_j_per_output_token") and is_timed("output_tokens_per_j")
    # Shown, gated only when asked (--fail-above energy_j_per_output_token=5%).
    assert gate_threshold("energy_j_per_output_token", 0.1, {}) is None
    assert gate_threshold("energy_j_per_output_token", 0.1,
                          {"energy_j_per_output_token": 0.05}) == 0.05
    ms = metric_samples("energy_j_per_output_token",
                        {"runs": {"round": [2, 5], "energy_j_per_output_token": [0.1, 0.2]}})
    assert ms is not None and ms.rounds == (2, 5) and ms.groups == ((0.1,), (0.2,))
    assert "energy_j_per_output_token" in COLUMNS and "gpu_throttle_reasons" in COLUMNS


def test_tiny_run_has_energy_columns_and_the_reason(tmp_path: Path) -> None:
    """On this machine (no GPU, no RAPL in the VM) the columns exist, stay empty, and
    energy_note says why (the notes stay clean); where RAPL exists they are filled."""
    from tests.conftest import run_beside_kv_cache

    rows, samples = run_beside_kv_cache(tmp_path, "kv-cache+sdpa")
    for variant, row in rows.items():
        assert "energy_j_per_output_token" in row and "gpu_sm_clock_mhz_min" in row
        assert row["gpu_sm_clock_mhz_min"] == ""  # no GPU
        if energy.rapl_domains():
            assert row["energy_method"] == "rapl_powercap"
        else:
            assert row["energy_method"] == "" and row["energy_j_per_output_token"] == ""
            assert row["energy_note"].startswith("no RAPL counters")
            assert "RAPL" not in row["notes"]


def test_table_shows_energy_only_where_measured() -> None:
    from infer_opt.results.energy_table import render_energy

    row = {"status": "ok", "variant": "kv-cache+bf16", "workload": "static-batch",
           "batch_size": "1", "prompt_tokens": "128", "new_tokens": "32",
           "energy_method": "nvml_energy_counter", "energy_j_per_output_token": "0.0123456",
           "output_tokens_per_j": "81.0", "power_w_mean": "250.5", "gpu_sm_clock_mhz_min": "1980",
           "gpu_mem_clock_mhz_min": "2619", "gpu_power_draw_w_max": "300.25",
           "gpu_power_limit_w": "700", "gpu_temp_c_max": "45", "gpu_throttle_reasons": "none"}
    text = render_energy([row])
    assert "(nvml_energy_counter)" in text
    assert ("| kv-cache+bf16 | bs1 p128/n32 | 0.0123 | 81.0 | 250.5 | 1980 | 2619 | 300.2 | "
            "700 | 45 | none |") in text
    cpu_row = {k: "" for k in row} | {"status": "ok", "variant": "kv-cache"}
    assert render_energy([cpu_row]) == ""
