"""The columns of a results CSV, in order. Units are in the names.

Rows are flat; environment columns are repeated in every row so a row read alone still says
where and how it was measured. Add columns at the end of a section; bump SCHEMA_VERSION when a
column is renamed, removed or changes meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infer_opt import SCHEMA_VERSION
from infer_opt.core.stats import STAT_NAMES

IDENTITY = ["schema_version", "run_id", "cell_index", "suite", "group", "model", "variant",
            "engine", "device", "workload", "batch_size", "prompt_tokens", "new_tokens",
            "warmup_runs", "dtype", "attn_implementation", "kv_cache"]
STATUS = ["status", "reason", "notes"]
LATENCY_METRICS = ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"]
LATENCY = [f"{m}_{s}" for m in LATENCY_METRICS for s in STAT_NAMES]
THROUGHPUT = ["decode_tokens_per_s", "output_tokens_per_s", "prefill_tokens_per_s",
              "requests_per_s"]
COST = ["first_call_ms", "load_s", "cell_s"]
# How the timed runs were sampled (workloads/base.Sampled, run/rounds.py): n, their total time,
# why sampling stopped, and the 95% bootstrap interval of the median TPOT and decode tok/s.
SAMPLING = ["timed_runs", "timed_s", "sampling_stop", "tpot_ms_p50_ci_low",
            "tpot_ms_p50_ci_high", "decode_tokens_per_s_ci_low", "decode_tokens_per_s_ci_high"]
MEMORY = ["weight_mb", "rss_before_load_mb", "peak_rss_mb", "peak_device_mem_mb"]
ROOFLINE = ["bytes_per_decode_step_mb", "achieved_gb_per_s", "bandwidth_gb_per_s", "roofline_pct"]
ENVIRONMENT = ["host", "cpu_model", "cpu_count", "gpu_name", "torch_threads", "python_version",
               "torch_version", "transformers_version", "cuda_version", "package_versions",
               "infer_opt_version", "git_commit", "timestamp_utc"]
# Output fidelity against the pinned fp32 baseline (see fidelity.py), untimed.
FIDELITY = ["kl_mean", "kl_max", "top1_agreement_pct", "greedy_match_tokens", "perplexity",
            "logits_nonfinite_count"]
# Online serving workloads (workload = "online"): the load, the policy, and what it achieved.
# ttft/tpot/itl/e2e, output_tokens_per_s and requests_per_s above keep their meaning, per request.
SERVING = ["policy", "arrival", "arrival_rate_per_s", "burstiness", "num_requests",
           "max_batch_size", "max_wait_ms", "prompts", "prefix_tokens", "prefix_reuse"] + [
    f"queue_ms_{s}" for s in STAT_NAMES] + [
    "goodput_requests_per_s", "ttft_slo_ms", "tpot_slo_ms", "e2e_slo_ms", "slo_target_pct",
    "slo_met_pct", "meets_slo", "duration_s", "mean_batch_size", "prefix_prefill_ms"]

COLUMNS = (IDENTITY + STATUS + LATENCY + THROUGHPUT + COST + SAMPLING + MEMORY + ROOFLINE
           + ENVIRONMENT + FIDELITY + SERVING)
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
