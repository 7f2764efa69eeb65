"""The columns of a results CSV, in order, and what each metric column means for a comparison.

Units are in the names. Rows are flat; environment columns are repeated in every row so a row
read alone still says where and how it was measured. Add columns at the end of a section; bump
SCHEMA_VERSION when a column is added, renamed, removed or changes meaning.

A results CSV's header is COLUMNS in this order, followed by any extra metric columns (plugins
declare their own, e.g. `acceptance_rate_pct`); results.io checks it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from infer_opt import SCHEMA_VERSION
from infer_opt.core.stats import STAT_NAMES

IDENTITY = ["schema_version", "run_id", "cell_index", "suite", "group", "model", "variant",
            "engine", "device", "workload", "batch_size", "prompt_tokens", "new_tokens",
            "warmup_runs", "dtype", "attn_implementation", "kv_cache"]
STATUS = ["status", "reason", "notes"]
LATENCY_METRICS = ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"]
# p90 is empty below 10 samples and p99 below 100 (stats.MIN_SAMPLES).
LATENCY = [f"{m}_{s}" for m in LATENCY_METRICS for s in STAT_NAMES]
THROUGHPUT = ["decode_tokens_per_s", "output_tokens_per_s", "prefill_tokens_per_s",
              "requests_per_s"]
# How long the cell was timed and how sure its medians are (core/sampling.py, run/rounds.py):
# timed_runs is the n behind every statistic of a static row; the intervals are 95% bootstrap intervals of the
# median over timed runs; sampling_stop is why timing stopped (precision, max_repeats,
# max_timed_s).
SAMPLING = ["timed_runs", "timed_s", "sampling_stop", "tpot_ms_p50_ci_low", "tpot_ms_p50_ci_high",
            "decode_tokens_per_s_ci_low", "decode_tokens_per_s_ci_high"]
COST = ["first_call_ms", "load_s", "cell_s"]
MEMORY = ["weight_mb", "rss_before_load_mb", "peak_rss_mb", "peak_device_mem_mb"]
# roofline_pct is empty where the decode step is not memory-bound (core/roofline.py).
ROOFLINE = ["bytes_per_decode_step_mb", "achieved_gb_per_s", "bandwidth_gb_per_s", "roofline_pct",
            "arithmetic_intensity_flop_per_byte"]
ENVIRONMENT = ["host", "cpu_model", "cpu_count", "gpu_name", "torch_threads", "python_version",
               "torch_version", "transformers_version", "cuda_version", "package_versions",
               "infer_opt_version", "git_commit", "timestamp_utc"]
# What else the machine did while the cell was timed (core/telemetry.py); machine_busy marks
# rows whose timings include other work.
TELEMETRY = ["load_avg_1m_start", "load_avg_1m_end", "cpu_steal_pct", "other_cpu_pct",
             "torch_threads_in_effect", "cpu_mhz", "machine_busy"]
# Output fidelity against the pinned fp32 baseline (see fidelity.py), untimed.
FIDELITY = ["kl_mean", "kl_max", "top1_agreement_pct", "greedy_match_tokens", "perplexity",
            "logits_nonfinite_count"]
# Online serving workloads (workload = "online"): the load, the policy, and what it achieved.
# ttft/tpot/itl/e2e, output_tokens_per_s and requests_per_s above keep their meaning, per request.
SERVING_LOAD = ["policy", "arrival", "arrival_rate_per_s", "burstiness", "num_requests",
                "max_batch_size", "max_wait_ms", "prompts", "prefix_tokens", "prefix_reuse"]
SERVING_SLO = ["ttft_slo_ms", "tpot_slo_ms", "e2e_slo_ms", "slo_target_pct"]
SERVING = SERVING_LOAD + [f"queue_ms_{s}" for s in STAT_NAMES] + [
    "goodput_requests_per_s"] + SERVING_SLO + [
    "slo_met_pct", "meets_slo", "duration_s", "mean_batch_size", "prefix_prefill_ms"]

# Energy over the timed runs and the GPU state they ran at (core/energy.py): medians over
# runs per output token; the method names the counter (nvml_energy_counter, rapl_powercap),
# empty where there is none (energy_note says why). GPU state: the worst reading after any
# timed run (lowest clocks, highest draw and temperature, every throttle reason seen).
ENERGY = ["energy_method", "energy_note", "energy_j", "power_w_mean",
          "energy_j_per_output_token", "output_tokens_per_j"]
GPU_STATE = ["gpu_sm_clock_mhz_min", "gpu_mem_clock_mhz_min", "gpu_power_limit_w",
             "gpu_power_draw_w_max", "gpu_temp_c_max", "gpu_throttle_reasons"]

COLUMNS = (IDENTITY + STATUS + LATENCY + THROUGHPUT + SAMPLING + COST + MEMORY + ROOFLINE
           + ENVIRONMENT + TELEMETRY + FIDELITY + SERVING + ENERGY + GPU_STATE)
STATUSES = ("ok", "skipped", "failed")


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


# --- metric directions: what "better" means for a column -------------------------------------
# Every reader (compare, table) asks direction(column). Plugin-declared metric columns
# (core/plugin.Metric.better) go into METRIC_DIRECTIONS (exact names, checked first).

METRIC_DIRECTIONS: dict[str, str | None] = {
    "greedy_match_tokens": "higher",
    "slo_met_pct": "higher",
    "logits_nonfinite_count": "lower",
    "energy_j_per_output_token": "lower",
    "output_tokens_per_j": "higher",
    "power_w_mean": None,  # shown, never gated: more watts can buy more tokens
}
# Columns that describe a row or its machine rather than measure the variant: never compared.
DESCRIPTIVE = (set(IDENTITY) | set(STATUS) | set(ENVIRONMENT) | set(SAMPLING) | set(TELEMETRY)
               | set(SERVING_LOAD) | set(SERVING_SLO) | set(GPU_STATE) | {
                   "energy_method", "energy_note",
                   "energy_j",  # grows with the number of runs
                   "bandwidth_gb_per_s",  # the machine's measured bandwidth
                   "rss_before_load_mb",  # the process before the model loads
                   "bytes_per_decode_step_mb",  # computed from the model's size, not measured
                   "arithmetic_intensity_flop_per_byte",  # computed, not measured
                   "duration_s",  # an online run's length follows from its arrivals
                   "mean_batch_size", "meets_slo"})
# (regex on the column name, better direction or None = shown but never gated); first match wins.
METRIC_RULES: list[tuple[str, str | None]] = [
    (r"(^|_)kl(_|$)", "lower"),  # KL divergence from the reference (kl_max included)
    (r"_(std|min|max)$", None),  # spread and extremes: context, too noisy to gate on
    (r"^(load_s|cell_s|first_call_ms)$", None),  # one-off costs, noisy
    (r"^(achieved_gb_per_s|roofline_pct)$", None),  # derived from tpot_ms_p50 and rounded
    (r"(perplexity|ppl|nll|error|mismatch|nonfinite)", "lower"),
    (r"(agreement|match|accuracy|top\d*)\w*_pct$", "higher"),
    (r"_ms(_(mean|p\d+))?$", "lower"),  # latencies
    (r"_per_s$", "higher"),  # throughputs
    (r"_mb$", "lower"),  # memory
    (r"_s$", "lower"),  # other durations
]


def declared_metrics() -> dict[str, str | None]:
    """Metric columns that the installed plugins and engines declare, with their better
    direction (core/plugin.Metric): a third-party metric is compared the way its plugin says."""
    from infer_opt.core import registry

    out: dict[str, str | None] = {}
    for kind in ("engine", "plugin"):
        for name in registry.names(kind):
            try:
                cls = registry.load(kind, name)
            except Exception:  # a broken third-party plugin must not break compare
                continue
            for m in getattr(cls, "metrics", ()):
                out[m.name] = m.better
    return out


def direction(column: str) -> str | None:
    """'lower', 'higher' or None (described, not compared) for a column name: a plugin's own
    declaration first, then the core table, then the unit in the name."""
    declared = _declared()
    if column in declared:
        return declared[column]
    if column in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[column]
    if column in DESCRIPTIVE:
        return None
    for pattern, better in METRIC_RULES:
        if re.search(pattern, column):
            return better
    return None


_DECLARED: dict[str, str | None] | None = None


def _declared() -> dict[str, str | None]:
    global _DECLARED
    if _DECLARED is None:
        _DECLARED = declared_metrics()
    return _DECLARED


# Absolute floors, in the column's own unit: a change is a regression (or an improvement) only
# when |new - old| also exceeds the floor. Near zero a ratio says nothing: KL 1e-12 -> 1e-9 is
# x1000 and the same answers; a queue of 0.02 ms -> 0.05 ms is +150% of nothing. First match wins.
FLOORS: list[tuple[str, float]] = [
    (r"(^|_)kl(_|$)", 1e-6),  # nats: below it fp32 reordering noise, the same distributions
    (r"^queue_ms_", 1.0),  # ms: an unloaded server admits within a scheduling tick
    (r"^greedy_match_tokens$", 1.0),  # tokens: one token more or less of a chaotic prefix
    (r"_pct$", 1.0),  # percentage points: 1 of 64 fidelity positions is 1.6 points
    (r"_mb$", 1.0),  # MiB: allocator and page granularity
]


def floor(column: str) -> float:
    """The absolute floor of a column (FLOORS), 0.0 when it has none."""
    for pattern, value in FLOORS:
        if re.search(pattern, column):
            return value
    return 0.0
