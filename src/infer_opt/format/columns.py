"""The columns of a results CSV, in order, and the ONE table of what each column means.

Units are in the names. Rows are flat; environment columns are repeated in every row so a row
read alone still says where and how it was measured. Add columns at the end of a section; bump
SCHEMA_VERSION when a column is added, renamed, removed or changes meaning.

A results CSV's header is COLUMNS in this order, followed by any extra metric columns (plugins
and engines declare their own with core/plugin.Metric, e.g. `acceptance_rate_pct`);
format/io.py checks it.

Every reader asks `column(name)` what a column means (`Column`: unit, better direction, timed,
gated, floor, shown); the answer comes from, in order: a plugin's or engine's Metric
declaration, the core table below (METRICS), and for a column nobody here declares (a CSV
written with a plugin that is not installed) the unit convention of its name, shown but never
gated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infer_opt import SCHEMA_VERSION
from infer_opt.core.stats import STAT_NAMES

IDENTITY = [
    "schema_version", "run_id", "cell_index", "suite", "group", "model", "variant",
    "engine", "device", "workload", "batch_size", "prompt_tokens", "new_tokens",
    "warmup_runs", "dtype", "attn_implementation", "kv_cache",
    "depth_tokens",  # context already in the KV cache when the timed run starts
]
STATUS = ["status", "reason", "notes"]
LATENCY_METRICS = ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"]
# p90 is empty below 10 samples and p99 below 100 (stats.MIN_SAMPLES).
LATENCY = [f"{m}_{s}" for m in LATENCY_METRICS for s in STAT_NAMES]
THROUGHPUT = [
    "decode_tokens_per_s",
    "output_tokens_per_s",
    "prefill_tokens_per_s",
    "requests_per_s",
]
# How long the cell was timed and how sure its medians are (core/sampling.py, run/rounds.py):
# timed_runs is the n behind every statistic of a static row; the intervals are 95% bootstrap
# intervals of the median over timed runs; sampling_stop is why timing stopped (precision,
# max_repeats, max_timed_s).
SAMPLING = [
    "timed_runs",
    "timed_s",
    "sampling_stop",
    "tpot_ms_p50_ci_low",
    "tpot_ms_p50_ci_high",
    "decode_tokens_per_s_ci_low",
    "decode_tokens_per_s_ci_high",
]
COST = [
    "first_call_ms",
    "load_s",
    "cell_s",
]
# kv_*: the KV cache as the engine really stored it (kv_dtype, bytes per token by dtype and
# layout, allocated and used after the first timed run); run_added_mb: what one timed run
# adds to the process's resident memory (peak during the run - before it), median and 95%
# interval over timed runs (core/memory.py): a figure that repeats, unlike peak_rss_mb.
MEMORY = [
    "weight_mb",
    "rss_before_load_mb",
    "peak_rss_mb",
    "peak_device_mem_mb",
    "kv_dtype",
    "kv_bytes_per_token",
    "kv_allocated_mb",
    "kv_used_mb",
    "run_added_mb_p50",
    "run_added_mb_ci_low",
    "run_added_mb_ci_high",
]
# roofline_pct is empty where the decode step is not memory-bound (core/roofline.py).
ROOFLINE = [
    "bytes_per_decode_step_mb",
    "achieved_gb_per_s",
    "bandwidth_gb_per_s",
    "roofline_pct",
    "arithmetic_intensity_flop_per_byte",
    "bandwidth_method",  # how bandwidth_gb_per_s was measured (core/roofline.py)
]
# plugin_sources: JSON, the distribution and version that provided the engine and each plugin
# of the row's variant (core/registry.py), e.g. {"engine torch": "infer-opt 0.1.0", ...}.
ENVIRONMENT = [
    "host", "cpu_model", "cpu_count", "gpu_name", "torch_threads", "python_version",
    "torch_version", "transformers_version", "cuda_version", "package_versions",
    "infer_opt_version", "git_commit", "timestamp_utc",
    "plugin_sources",
]
# What else the machine did while the cell was timed (core/telemetry.py); machine_busy marks
# rows whose timings include other work.
TELEMETRY = [
    "load_avg_1m_start",
    "load_avg_1m_end",
    "cpu_steal_pct",
    "other_cpu_pct",
    "torch_threads_in_effect",
    "cpu_mhz",
    "machine_busy",
]
# Output fidelity against the pinned fp32 baseline (see run/fidelity.py), untimed.
FIDELITY = [
    "kl_mean",
    "kl_max",
    "top1_agreement_pct",
    "greedy_match_tokens",
    "perplexity",
    "logits_nonfinite_count",
    # Depth rows: along the fp32 reference's continuation of the row's own context,
    # the variant reading its KV cache at that depth (workloads/depth_fidelity.py).
    "kl_at_depth_mean",
    "kl_at_depth_max",
    "top1_at_depth_pct",
]
# Online serving workloads (workload = "online"): the load, the policy, and what it achieved.
# ttft/tpot/itl/e2e, output_tokens_per_s and requests_per_s above keep their meaning, per request.
SERVING_LOAD = [
    "policy",
    "arrival",
    "arrival_rate_per_s",
    "burstiness",
    "num_requests",
    "max_batch_size",
    "max_wait_ms",
    "prompts",
    "prefix_tokens",
    "prefix_reuse",
    "concurrency",  # closed-loop clients (arrival = concurrency): the load instead of a rate
]
SERVING_SLO = [
    "ttft_slo_ms",
    "tpot_slo_ms",
    "e2e_slo_ms",
    "slo_target_pct",
]
SERVING = SERVING_LOAD + [f"queue_ms_{s}" for s in STAT_NAMES] + [
    "goodput_requests_per_s",
] + SERVING_SLO + [
    "slo_met_pct",
    "meets_slo",
    "duration_s",
    "mean_batch_size",
    "prefix_prefill_ms",
]

# Energy over the timed runs and the GPU state they ran at (core/energy.py): medians over
# runs per output token; the method names the counter (nvml_energy_counter, rapl_powercap),
# empty where there is none (energy_note says why). GPU state: the worst reading after any
# timed run (lowest clocks, highest draw and temperature, every throttle reason seen).
ENERGY = [
    "energy_method",
    "energy_note",
    "energy_j",
    "power_w_mean",
    "energy_j_per_output_token",
    "output_tokens_per_j",
]
GPU_STATE = [
    "gpu_sm_clock_mhz_min",
    "gpu_mem_clock_mhz_min",
    "gpu_power_limit_w",
    "gpu_power_draw_w_max",
    "gpu_temp_c_max",
    "gpu_throttle_reasons",
]

COLUMNS = (IDENTITY + STATUS + LATENCY + THROUGHPUT + SAMPLING + COST + MEMORY + ROOFLINE
           + ENVIRONMENT + TELEMETRY + FIDELITY + SERVING + ENERGY + GPU_STATE)
STATUSES = ("ok", "skipped", "failed")
# Core columns added by each schema version (infer_opt.SCHEMA_VERSION), so a CSV written by an
# older infer-opt is still read: the columns it predates are filled empty, and the reader says
# so. A rename or a change of meaning cannot be migrated: bump MIN_READABLE_SCHEMA then.
ADDED_IN: dict[int, list[str]] = {
    3: ["plugin_sources"],
    4: ["depth_tokens", "kv_dtype", "kv_bytes_per_token", "kv_allocated_mb", "kv_used_mb",
        "run_added_mb_p50", "run_added_mb_ci_low", "run_added_mb_ci_high", "bandwidth_method",
        "kl_at_depth_mean", "kl_at_depth_max", "top1_at_depth_pct"],
    5: [*ENERGY, *GPU_STATE],
    6: ["concurrency"],
}
MIN_READABLE_SCHEMA = 2


def run_columns(extra: Sequence[str] = ()) -> list[str]:
    """The columns of one run's CSV: the core columns, then the metric columns that the run's
    plugins and engines declare (core/plugin.Metric), sorted, so a third-party metric reaches
    the CSV, the table and compare."""
    return COLUMNS + sorted(set(extra) - set(COLUMNS))


def empty_row(extra: Sequence[str] = ()) -> dict[str, Any]:
    row: dict[str, Any] = {c: "" for c in run_columns(extra)}
    row["schema_version"] = SCHEMA_VERSION
    return row


def check_row(row: dict[str, Any], columns: Sequence[str] = COLUMNS) -> None:
    unknown = set(row) - set(columns)
    if unknown:
        raise ValueError(f"row has columns outside the schema: {sorted(unknown)}")
    if row.get("status") not in STATUSES:
        raise ValueError(f"row status must be one of {STATUSES}, got {row.get('status')!r}")


# --- what a column means -----------------------------------------------------------------------

LOWER, HIGHER = "lower", "higher"


@dataclass(frozen=True)
class Column:
    """What a metric column means to every reader (compare, table, report).

    better: 'lower', 'higher', or None (describes the row, never compared).
    timed: measured over timed runs (latency, throughput): it has samples, needs enough runs
      for a verdict, is normalized by a reference variant across runs, and must be a finite
      number >= 0 in a well-formed file.
    gated: judged by compare's default gate (`--fail-above METRIC=X%` gates another directed one).
    gateable: False for one number per row whose run-to-run spread is unknown (peak memory):
      shown, never a verdict, even when asked.
    floor: in the column's unit, a change no larger than this is "below floor" (near zero a
      ratio says nothing: KL 1e-12 -> 1e-9 is x1000 and the same answers).
    shown: printed by compare by default (every compared column with --all).
    """

    name: str
    unit: str
    better: str | None = None
    timed: bool = False
    gated: bool = False
    gateable: bool = True
    floor: float = 0.0
    shown: bool = False


# Floors by unit: allocator/page granularity for MiB; 1 of 64 fidelity positions is 1.6
# percentage points; below 1e-6 nats KL is fp32 reordering noise; one greedy token more or less
# of a chaotic prefix.
UNIT_FLOORS = {"MiB": 1.0, "%": 1.0, "nats": 1e-6, "tokens": 1.0}


def _latency(metric: str, stat: str) -> Column:
    name = f"{metric}_{stat}"
    if stat in ("std", "min", "max"):  # spread and extremes: context, too noisy to compare
        return Column(name, "ms")
    # ITL is not gated: in a static row TPOT is the mean ITL, and gating both doubles one test.
    headline = stat == "p50" and metric != "itl_ms"
    return Column(name, "ms", LOWER, timed=True, gated=headline,
                  shown=headline or name == "itl_ms_p99")


# The core metric columns that are compared; every other core column describes the row.
METRICS: list[Column] = [
    *(_latency(m, s) for m in LATENCY_METRICS for s in STAT_NAMES),
    Column("decode_tokens_per_s", "tokens/s", HIGHER, timed=True, gated=True, shown=True),
    Column("output_tokens_per_s", "tokens/s", HIGHER, timed=True, gated=True, shown=True),
    Column("prefill_tokens_per_s", "tokens/s", HIGHER, timed=True, gated=True),
    Column("requests_per_s", "requests/s", HIGHER, timed=True, gated=True),
    Column("weight_mb", "MiB", LOWER, gated=True, floor=1.0),
    # One number per row, whose run-to-run spread nobody measured (issue 22): shown, not gated.
    Column("peak_rss_mb", "MiB", LOWER, gateable=False, floor=1.0, shown=True),
    Column("peak_device_mem_mb", "MiB", LOWER, gateable=False, floor=1.0),
    # The KV cache as allocated and used: sizes the code decides, the same in every run.
    Column("kv_allocated_mb", "MiB", LOWER, gated=True, floor=1.0),
    Column("kv_used_mb", "MiB", LOWER, gated=True, floor=1.0, shown=True),
    # What a timed run adds to resident memory, median over timed runs with its interval:
    # repeatable within a run, but its spread across runs is not yet known: shown, not gated.
    Column("run_added_mb_p50", "MiB", LOWER, floor=1.0, shown=True),
    Column("kl_mean", "nats", LOWER, gated=True, floor=1e-6),
    Column("kl_max", "nats", LOWER, gated=True, floor=1e-6),
    Column("top1_agreement_pct", "%", HIGHER, gated=True, floor=1.0),
    Column("greedy_match_tokens", "tokens", HIGHER, gated=True, floor=1.0),
    Column("perplexity", "", LOWER, gated=True),
    Column("logits_nonfinite_count", "count", LOWER, gated=True),
    Column("kl_at_depth_mean", "nats", LOWER, gated=True, floor=1e-6),
    Column("kl_at_depth_max", "nats", LOWER, gated=True, floor=1e-6),
    Column("top1_at_depth_pct", "%", HIGHER, gated=True, floor=1.0),
    # An unloaded server admits within a scheduling tick: 1 ms of queueing is nothing.
    *(Column(f"queue_ms_{s}", "ms", LOWER, timed=True, gated=s == "p50", floor=1.0)
      for s in STAT_NAMES if s not in ("std", "min", "max")),
    Column("goodput_requests_per_s", "requests/s", HIGHER, timed=True, gated=True),
    Column("slo_met_pct", "%", HIGHER, timed=True, gated=True, floor=1.0),
    Column("prefix_prefill_ms", "ms", LOWER, timed=True),
    # Energy per run, paired by round like latency; shown, gated only when asked
    # (--fail-above energy_j_per_output_token=X%): joules depend on the machine's power state.
    Column("energy_j_per_output_token", "J/token", LOWER, timed=True, shown=True),
    Column("output_tokens_per_j", "tokens/J", HIGHER, timed=True),
]
TABLE: dict[str, Column] = {c.name: c for c in METRICS}


def unit_of(name: str) -> str:
    """The unit a column's name carries (`tpot_ms_p50` -> 'ms'), '' when it carries none."""
    for pattern, unit in _UNIT_SUFFIXES:
        if re.search(pattern, name):
            return unit
    return ""


_UNIT_SUFFIXES = [
    (r"_gb_per_s$", "GB/s"), (r"_tokens_per_s$", "tokens/s"), (r"_per_s$", "/s"),
    (r"_ms(_[a-z0-9]+)?$", "ms"), (r"_s$", "s"), (r"_mb$", "MiB"), (r"_pct$", "%"),
    (r"(^|_)kl(_|$)", "nats"), (r"_tokens$", "tokens"),
]


def from_metric(name: str, better: str | None, unit: str = "", timed: bool = False,
                gated: bool = False, floor: float | None = None) -> Column:
    """The Column of a plugin's or engine's Metric declaration (core/plugin.Metric)."""
    unit = unit or unit_of(name)
    return Column(name, unit, better, timed=timed, gated=gated and better is not None,
                  floor=UNIT_FLOORS.get(unit, 0.0) if floor is None else floor)


def declared_metrics() -> dict[str, Column]:
    """Metric columns that the installed plugins and engines declare (core/plugin.Metric)."""
    from infer_opt.core import registry

    out: dict[str, Column] = {}
    for kind in ("engine", "plugin"):
        for name in registry.names(kind):
            try:
                cls = registry.load(kind, name)
            except Exception:  # a broken third-party plugin must not break compare
                continue
            for m in getattr(cls, "metrics", ()):
                out[m.name] = from_metric(m.name, m.better, getattr(m, "unit", ""),
                                          getattr(m, "timed", False), getattr(m, "gated", False))
    return out


_DECLARED: dict[str, Column] | None = None


def column(name: str) -> Column:
    """What a column means: a plugin's or engine's declaration first, then the core table, then
    (a core column that describes the row, or a column nobody here declares) a Column with no
    better direction: shown in tables, never compared."""
    global _DECLARED
    if _DECLARED is None:
        _DECLARED = declared_metrics()
    if name in _DECLARED:
        return _DECLARED[name]
    if name in TABLE:
        return TABLE[name]
    return Column(name, unit_of(name))


def direction(name: str) -> str | None:
    """'lower', 'higher' or None (described, not compared)."""
    return column(name).better


def floor(name: str) -> float:
    """The absolute floor of a column, in its unit (0.0 when it has none)."""
    return column(name).floor


def is_timed(name: str) -> bool:
    """Latency and throughput columns: measured over timed runs, so they have samples."""
    return column(name).timed
