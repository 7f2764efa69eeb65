"""The one column table (format/columns.py): hand-picked columns, exactly, and plugin Metric
declarations filling the same table."""

from __future__ import annotations

import pytest

from infer_opt.core.plugin import Metric
from infer_opt.format import columns
from infer_opt.format.columns import COLUMNS, Column, column, from_metric, unit_of


@pytest.mark.parametrize("name, unit, better, timed, gated, gateable, floor, shown", [
    ("tpot_ms_p50", "ms", "lower", True, True, True, 0.0, True),
    ("itl_ms_p50", "ms", "lower", True, False, True, 0.0, False),  # TPOT is the mean ITL
    ("itl_ms_p99", "ms", "lower", True, False, True, 0.0, True),
    ("ttft_ms_p90", "ms", "lower", True, False, True, 0.0, False),
    ("e2e_ms_std", "ms", None, False, False, True, 0.0, False),  # spread: context only
    ("decode_tokens_per_s", "tokens/s", "higher", True, True, True, 0.0, True),
    ("requests_per_s", "requests/s", "higher", True, True, True, 0.0, False),
    ("queue_ms_p50", "ms", "lower", True, True, True, 1.0, False),
    ("slo_met_pct", "%", "higher", True, True, True, 1.0, False),
    ("weight_mb", "MiB", "lower", False, True, True, 1.0, False),
    ("peak_rss_mb", "MiB", "lower", False, False, False, 1.0, True),  # one number per row
    ("peak_device_mem_mb", "MiB", "lower", False, False, False, 1.0, False),
    ("kl_mean", "nats", "lower", False, True, True, 1e-6, False),
    ("top1_agreement_pct", "%", "higher", False, True, True, 1.0, False),
    ("greedy_match_tokens", "tokens", "higher", False, True, True, 1.0, False),
    ("logits_nonfinite_count", "count", "lower", False, True, True, 0.0, False),
])
def test_core_columns(name: str, unit: str, better: str | None, timed: bool, gated: bool,
                      gateable: bool, floor: float, shown: bool) -> None:
    assert column(name) == Column(name, unit, better, timed, gated, gateable, floor, shown)


@pytest.mark.parametrize("name", ["variant", "timestamp_utc", "arrival_rate_per_s",
                                  "max_wait_ms", "timed_s", "tpot_ms_p50_ci_low",
                                  "other_cpu_pct", "machine_busy", "ttft_slo_ms", "duration_s",
                                  "bandwidth_gb_per_s", "load_s", "first_call_ms",
                                  "roofline_pct", "rss_before_load_mb"])
def test_descriptive_columns_are_never_compared(name: str) -> None:
    assert name in COLUMNS
    meaning = column(name)
    assert meaning.better is None and not meaning.gated and not meaning.timed


def test_every_table_entry_is_a_core_column() -> None:
    assert set(columns.TABLE) <= set(COLUMNS)


def test_units_from_names() -> None:
    assert [unit_of(n) for n in ("x_ms_p50", "x_ms", "x_tokens_per_s", "achieved_gb_per_s",
                                 "x_per_s", "compile_s", "x_mb", "x_pct", "kl_sym", "y")] == [
        "ms", "ms", "tokens/s", "GB/s", "/s", "s", "MiB", "%", "nats", ""]


def test_a_plugin_metric_fills_the_same_table(monkeypatch: pytest.MonkeyPatch) -> None:
    # Old-style declaration (three fields): unit from the name, not timed, not gated.
    old = Metric("acceptance_rate_pct", "higher", "accepted drafts, %")
    assert from_metric(old.name, old.better, old.unit, old.timed, old.gated) == Column(
        "acceptance_rate_pct", "%", "higher", timed=False, gated=False, floor=1.0)
    new = Metric("steps_ms", "lower", "per-step time", unit="ms", timed=True, gated=True)
    monkeypatch.setattr(columns, "_DECLARED", {new.name: from_metric(
        new.name, new.better, new.unit, new.timed, new.gated)})
    assert column("steps_ms") == Column("steps_ms", "ms", "lower", timed=True, gated=True)
    # A column nobody here declares (its plugin is not installed): shown, never compared.
    assert column("foreign_ms_p50") == Column("foreign_ms_p50", "ms")
