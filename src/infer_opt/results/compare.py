"""Comparing two runs (or variants inside one run) with a noise-aware regression gate.

Rows are joined on their identity: model, variant, engine, device, workload kind and its
parameters (batch size, prompt and new tokens; for any workload kind, the full workload dict kept
in the samples file when both runs have one). Every metric column present in both files whose
better direction is known (METRIC_RULES) is compared as a ratio new / old.

A difference is a regression only when it is clearly larger than a threshold (`--fail-above`,
10% by default, per metric possible): the whole 95% bootstrap interval of the ratio lies beyond
the threshold, not only its point estimate (a non-inferiority margin, as in equivalence testing).
A point estimate past the threshold whose interval reaches back inside it is reported as "within
noise". The stricter rule is deliberate: the interval comes from samples of one run each, so it
cannot see drift between runs; requiring the interval itself to clear the threshold keeps a
10% gate from firing on an 11% wobble whose interval starts at +5%, while a real 15% slowdown
measured with a few percent of spread is still caught.

The interval comes from the raw samples beside each CSV (`<run_id>.samples.jsonl`): timed runs
are resampled with replacement (whole runs, so the inter-token latencies of one run stay
together and their correlation is not mistaken for precision), the row's statistic (median,
p90, ...) is recomputed on each resample, and the ratio's 2.5 and 97.5 percentiles are kept. The
generator is seeded, so the verdict is reproducible. Without samples the point ratio is used
alone and the output says so. Drift between runs (another load on the machine, thermal state)
moves every row the same way: the output states the median change of the rows' TPOT so a shift
shared by all rows can be told apart from one variant's regression.

Reference: Efron & Tibshirani, "An Introduction to the Bootstrap" (1993), ch. 13 (percentile
intervals).
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infer_opt import SCHEMA_VERSION
from infer_opt.core.errors import UserError
from infer_opt.core.schema import ENVIRONMENT, IDENTITY, STATUS
from infer_opt.core.stats import Stats
from infer_opt.results.io import parse_number as _num

# Columns that describe a row rather than measure it; never compared.
NOT_METRICS = set(IDENTITY) | set(STATUS) | set(ENVIRONMENT) | {
    "bandwidth_gb_per_s",  # the machine's measured bandwidth: environment, not the variant
    "rss_before_load_mb",  # the process before the model loads
    "bytes_per_decode_step_mb",  # computed from the model's size, not measured
}
# Identity columns a join uses from the CSV (the samples' workload dict adds the rest).
JOIN_COLUMNS = ["model", "variant", "engine", "device", "workload", "batch_size",
                "prompt_tokens", "new_tokens"]
# Workload keys that change how long a cell is measured, not what it measures.
NOT_IDENTITY_WORKLOAD_KEYS = {"repeats", "warmup_runs", "warmup_new_tokens"}

# (regex on the column name, better direction or None = shown but never gated), first match wins.
METRIC_RULES: list[tuple[str, str | None]] = [
    (r"_(std|min|max)$", None),  # spread and extremes: context, too noisy to gate on
    (r"^(load_s|cell_s|first_call_ms)$", None),  # one-off costs, noisy
    (r"^(achieved_gb_per_s|roofline_pct)$", None),  # derived from tpot_ms_p50 and rounded
    (r"(^|_)kl(_|$)", "lower"),  # KL divergence from the reference
    (r"(perplexity|ppl|nll|error|mismatch)", "lower"),
    (r"(agreement|match|accuracy|top\d*|roofline)\w*_pct$", "higher"),
    (r"_ms(_(mean|p\d+))?$", "lower"),  # latencies
    (r"_per_s$", "higher"),  # throughputs and achieved bandwidth
    (r"_mb$", "lower"),  # memory
    (r"_s$", "lower"),
]
# Gated by default (a `--fail-above METRIC=X%` gates any other directed metric).
DEFAULT_GATED = ["*_ms_p50", "*_per_s", "weight_mb", "peak_rss_mb", "peak_device_mem_mb",
                 "*kl*", "*agreement*", "*match*_pct", "*accuracy*", "*perplexity*"]
DEFAULT_THRESHOLD = 0.10
# Metrics printed by default (all compared metrics with --all).
SHOWN = ["ttft_ms_p50", "tpot_ms_p50", "itl_ms_p50", "itl_ms_p99", "e2e_ms_p50",
         "decode_tokens_per_s", "output_tokens_per_s", "peak_rss_mb"]


def direction(column: str) -> str | None:
    """'lower', 'higher' or None (not a gated metric) for a column name."""
    if column in NOT_METRICS:
        return None
    for pattern, better in METRIC_RULES:
        if re.search(pattern, column):
            return better
    return None


# --- reading -------------------------------------------------------------------------------

@dataclass
class Run:
    path: Path
    rows: list[dict[str, str]]
    columns: list[str]
    samples: dict[str, dict[str, Any]]  # cell_index -> samples line
    samples_note: str = ""


def samples_path_for(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name.removesuffix(".csv") + ".samples.jsonl")


def read_run(path: Path) -> Run:
    """Read a results CSV and its samples; UserError (one line) on anything unreadable."""
    field_name = "csv"
    if not path.is_file():
        raise UserError(field_name, f"file {str(path)!r} not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise UserError(field_name, f"{path} is empty")
    try:
        reader = csv.DictReader(text.splitlines())
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as exc:
        raise UserError(field_name, f"{path} is not a valid CSV ({exc})") from None
    missing = [c for c in ("schema_version", "variant", "status", "model") if c not in columns]
    if missing:
        raise UserError(field_name, f"{path} is not an infer-opt results CSV (no column "
                                    f"{', '.join(missing)})")
    if not rows:
        raise UserError(field_name, f"{path} has a header but no rows")
    for i, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            fields = len([v for v in row.values() if v is not None]) + len(row.get(None) or [])
            raise UserError(field_name, f"{path} line {i}: {fields} fields where the header "
                                        f"has {len(columns)}")
        if row["schema_version"] != str(SCHEMA_VERSION):
            raise UserError(field_name, f"{path} has schema version {row['schema_version']!r}; "
                                        f"this infer-opt reads version {SCHEMA_VERSION}")
    samples: dict[str, dict[str, Any]] = {}
    note = ""
    sp = samples_path_for(path)
    if not sp.is_file():
        note = f"no samples file {sp.name}: {path.name} is compared on summary statistics only"
    else:
        try:
            for line in sp.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    s = json.loads(line)
                    samples[str(s.get("cell_index"))] = s
        except (json.JSONDecodeError, AttributeError):
            samples = {}
            note = f"unreadable samples file {sp.name}: {path.name} is compared on summary statistics only"
    return Run(path=path, rows=rows, columns=columns, samples=samples, samples_note=note)


# --- per-run samples of a metric ------------------------------------------------------------



def run_samples(column: str, row: dict[str, str], s: dict[str, Any] | None
                ) -> tuple[list[list[float]], str] | None:
    """The raw values behind `column`, one list per timed run, and the statistic the row took
    of them ('p50', 'p90', 'p99', 'mean'); None when the samples cannot rebuild it."""
    if not s:
        return None
    m = re.fullmatch(r"(ttft|e2e|itl|tpot)_ms_(p50|p90|p99|mean)", column)
    ttft, e2e, itl = s.get("ttft_ms"), s.get("e2e_ms"), s.get("itl_ms")
    if m:
        base, stat = m.groups()
        if base == "ttft" and ttft:
            return [[float(v)] for v in ttft], stat
        if base == "e2e" and e2e:
            return [[float(v)] for v in e2e], stat
        if base == "itl" and itl and all(itl):
            return [[float(v) for v in run] for run in itl], stat
        if base == "tpot" and itl and all(itl):
            # TPOT of a run = (e2e - ttft) / (n - 1) = the mean of its inter-token latencies.
            return [[math.fsum(run) / len(run)] for run in itl], stat
        return None
    if row.get("workload") != "static-batch":
        return None  # other workloads define throughput their own way: summary columns only
    b, p, n = _num(row.get("batch_size")), _num(row.get("prompt_tokens")), _num(row.get("new_tokens"))
    if b is None or p is None or n is None or not ttft or not e2e:
        return None
    # The static-batch throughput columns are medians over runs of these per-run values.
    if column == "decode_tokens_per_s" and itl and all(itl):
        return [[b * len(run) / (math.fsum(run) / 1e3)] for run in itl], "p50"
    if column == "output_tokens_per_s":
        return [[b * n / (v / 1e3)] for v in e2e], "p50"
    if column == "prefill_tokens_per_s":
        return [[b * p / (v / 1e3)] for v in ttft], "p50"
    if column == "requests_per_s":
        return [[b / (v / 1e3)] for v in e2e], "p50"
    return None


def _stat(values: Any, stat: str, axis: int = -1) -> Any:
    import numpy as np

    if stat == "mean":
        return np.mean(values, axis=axis)
    q = {"p50": 50, "p90": 90, "p99": 99}[stat]
    return np.percentile(values, q, axis=axis)  # linear: the same rule as stats.percentile


def bootstrap_ratio(old: Sequence[Sequence[float]], new: Sequence[Sequence[float]], stat: str,
                    resamples: int = 2000, confidence: float = 0.95, seed: int = 0
                    ) -> tuple[float, float, float]:
    """(ratio of stat(new) / stat(old), CI low, CI high), resampling whole runs.

    old, new: one list of values per timed run (runs of one side have equal lengths).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    if len({len(r) for r in old}) > 1 or len({len(r) for r in new}) > 1:
        # Groups of unequal size (e.g. requests of different lengths): resample single values.
        old = [[v] for r in old for v in r]
        new = [[v] for r in new for v in r]
    a = np.asarray(old, dtype=float)  # [runs_old, values_per_run]
    b = np.asarray(new, dtype=float)  # [runs_new, values_per_run]
    point = float(_stat(b.ravel(), stat) / _stat(a.ravel(), stat))
    ia = rng.integers(0, a.shape[0], size=(resamples, a.shape[0]))
    ib = rng.integers(0, b.shape[0], size=(resamples, b.shape[0]))
    sa = _stat(a[ia].reshape(resamples, -1), stat)  # [resamples]
    sb = _stat(b[ib].reshape(resamples, -1), stat)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = sb / sa
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return point, float("nan"), float("nan")
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return point, float(lo), float(hi)


# --- the comparison -----------------------------------------------------------------------

def parse_thresholds(specs: Sequence[str]) -> tuple[float, dict[str, float]]:
    """['10%', 'tpot_ms_p50=5%', '*_p99=20%'] -> (default, {pattern: fraction})."""
    default = DEFAULT_THRESHOLD
    per: dict[str, float] = {}
    for spec in specs:
        name, _, value = spec.rpartition("=")
        text = value.strip().removesuffix("%")
        try:
            frac = float(text) / 100.0
        except ValueError:
            frac = -1.0
        if not math.isfinite(frac) or frac < 0:
            raise UserError("--fail-above", f"expected PERCENT or METRIC=PERCENT (e.g. 10% or "
                                            f"tpot_ms_p50=5%), got {spec!r}")
        if name:
            per[name.strip()] = frac
        else:
            default = frac
    return default, per


@dataclass
class MetricResult:
    metric: str
    old: float
    new: float
    ratio: float
    ci: tuple[float, float] | None  # None: no samples, point ratio only
    better: str
    threshold: float | None  # None: not gated
    verdict: str  # regression / improvement / within noise / below threshold / not gated


@dataclass
class RowResult:
    label: str
    old_status: str
    new_status: str
    metrics: list[MetricResult] = field(default_factory=list)
    note: str = ""

    @property
    def regressions(self) -> list[MetricResult]:
        return [m for m in self.metrics if m.verdict == "regression"]

    @property
    def failed_now(self) -> bool:
        return self.old_status == "ok" and self.new_status == "failed"


@dataclass
class Comparison:
    title: str
    rows: list[RowResult]
    only_old: list[str]
    only_new: list[str]
    notes: list[str]
    default_threshold: float

    @property
    def regressed(self) -> list[RowResult]:
        return [r for r in self.rows if r.regressions or r.failed_now]


def _label(row: dict[str, str]) -> str:
    parts = [row.get("variant", ""), f"{row.get('workload', '')}"]
    for col, short in (("batch_size", "bs"), ("prompt_tokens", "prompt"), ("new_tokens", "new")):
        if row.get(col):
            parts.append(f"{short}={row[col]}")
    return " ".join(parts)


def _workload_key(run: Run, row: dict[str, str]) -> str:
    s = run.samples.get(row.get("cell_index", ""))
    w = dict(s.get("workload") or {}) if s else {}
    for k in NOT_IDENTITY_WORKLOAD_KEYS:
        w.pop(k, None)
    return json.dumps(w, sort_keys=True)


def row_key(run: Run, row: dict[str, str], use_workload: bool, drop: Sequence[str] = ()
            ) -> tuple[str, ...]:
    key = tuple(row.get(c, "") for c in JOIN_COLUMNS if c not in drop)
    return key + (_workload_key(run, row),) if use_workload else key


def keyed(run: Run, use_workload: bool, drop: Sequence[str] = ()) -> dict[tuple[str, ...], dict[str, str]]:
    """Rows by identity; a repeated identity gets '#2', '#3' so no row is silently lost."""
    out: dict[tuple[str, ...], dict[str, str]] = {}
    for row in run.rows:
        key = row_key(run, row, use_workload, drop)
        base, i = key, 1
        while key in out:
            i += 1
            key = base + (f"#{i}",)
        out[key] = row
    return out


def gate_threshold(metric: str, default: float, per: dict[str, float]) -> float | None:
    for pattern, frac in per.items():
        if fnmatch.fnmatchcase(metric, pattern):
            return frac
    if any(fnmatch.fnmatchcase(metric, p) for p in DEFAULT_GATED):
        return default
    return None


def compare_metric(metric: str, old_row: dict[str, str], new_row: dict[str, str],
                   old_s: dict[str, Any] | None, new_s: dict[str, Any] | None,
                   threshold: float | None, resamples: int, seed: int) -> MetricResult | None:
    better = direction(metric)
    old, new = _num(old_row.get(metric)), _num(new_row.get(metric))
    if better is None or old is None or new is None:
        return None
    if old == 0:
        ratio = 1.0 if new == 0 else math.inf
    else:
        ratio = new / old
    ci = None
    try:
        a, b = run_samples(metric, old_row, old_s), run_samples(metric, new_row, new_s)
        if a and b and a[1] == b[1] and old > 0 and new > 0:
            _, lo, hi = bootstrap_ratio(a[0], b[0], a[1], resamples=resamples, seed=seed)
            if math.isfinite(lo) and math.isfinite(hi):
                ci = (lo, hi)
    except (TypeError, ValueError):
        ci = None  # samples of an unexpected shape: judged on the summary columns
    worse = ratio - 1.0 if better == "lower" else 1.0 - ratio  # > 0: worse, as a fraction
    if ci is None:
        least_worse = most_worse = worse  # no samples: the point ratio is all there is
    elif better == "lower":
        least_worse, most_worse = ci[0] - 1.0, ci[1] - 1.0
    else:
        least_worse, most_worse = 1.0 - ci[1], 1.0 - ci[0]
    if threshold is None:
        verdict = "not gated"
    elif worse > threshold and least_worse > threshold:
        verdict = "regression"
    elif -worse > threshold and -most_worse > threshold:
        verdict = "improvement"
    elif abs(worse) > threshold:
        verdict = "within noise"
    else:
        verdict = "below threshold"
    return MetricResult(metric, old, new, ratio, ci, better, threshold, verdict)


def _compare_pair(label: str, old_row: dict[str, str], new_row: dict[str, str],
                  old_s: dict[str, Any] | None, new_s: dict[str, Any] | None, metrics: list[str],
                  default: float, per: dict[str, float], resamples: int, seed: int) -> RowResult:
    rr = RowResult(label, old_row.get("status", ""), new_row.get("status", ""))
    if rr.old_status != "ok" or rr.new_status != "ok":
        why = new_row.get("reason") if rr.new_status != "ok" else old_row.get("reason")
        rr.note = f"not compared: old {rr.old_status}, new {rr.new_status}" + (f" ({why})" if why else "")
        return rr
    for i, metric in enumerate(metrics):
        res = compare_metric(metric, old_row, new_row, old_s, new_s,
                             gate_threshold(metric, default, per), resamples, seed + i)
        if res is not None:
            rr.metrics.append(res)
    return rr


def _metric_columns(a: Run, b: Run) -> list[str]:
    theirs = set(b.columns)
    return [c for c in a.columns if c in theirs and direction(c) is not None]


def compare_runs(old: Run, new: Run, thresholds: Sequence[str] = (), resamples: int = 2000,
                 seed: int = 0) -> Comparison:
    default, per = parse_thresholds(thresholds)
    notes = [n for n in (old.samples_note, new.samples_note) if n]
    use_workload = bool(old.samples) and bool(new.samples)
    ko, kn = keyed(old, use_workload), keyed(new, use_workload)
    metrics = _metric_columns(old, new)
    rows = []
    for key in [k for k in ko if k in kn]:
        o, n = ko[key], kn[key]
        rows.append(_compare_pair(_label(n), o, n, old.samples.get(o["cell_index"]),
                                  new.samples.get(n["cell_index"]), metrics, default, per,
                                  resamples, seed))
    only_old = [_label(ko[k]) for k in ko if k not in kn]
    only_new = [_label(kn[k]) for k in kn if k not in ko]
    drift = common_shift(rows)
    if drift:
        notes.append(drift)
    if not rows:
        # A gate that matched nothing must not pass silently (wrong file, renamed variants).
        raise UserError("csv", f"no row of {new.path.name} matches a row of {old.path.name} on "
                               f"{', '.join(JOIN_COLUMNS)}; to compare different variants use "
                               f"--baseline-variant")
    return Comparison(f"{new.path.name} vs {old.path.name}", rows, only_old, only_new, notes,
                      default)


DRIFT_METRIC = "tpot_ms_p50"


def common_shift(rows: Sequence[RowResult], metric: str = DRIFT_METRIC) -> str:
    """One line on the median change of `metric` over all compared rows, or '' (< 3 rows).

    Between two runs on one machine, a load or clock change moves every row alike; one
    variant's regression moves one row. The median is robust to a few rows that really changed.
    """
    ratios = [m.ratio for r in rows for m in r.metrics
              if m.metric == metric and math.isfinite(m.ratio) and m.ratio > 0]
    if len(ratios) < 3:
        return ""
    median = Stats.of(ratios).p50
    return (f"{metric} changed by a median of {_pct(median)} over {len(ratios)} rows (a shift "
            f"shared by every row points at the machine, not at one variant)")


def compare_to_variant(run: Run, baseline: str, thresholds: Sequence[str] = (),
                       resamples: int = 2000, seed: int = 0, base_run: Run | None = None
                       ) -> Comparison:
    """Every variant of `run` against variant `baseline` of `base_run` (default: the same run)
    on the same workload; in one run, the baseline's own rows are not compared."""
    default, per = parse_thresholds(thresholds)
    base_run = base_run or run
    same = base_run is run
    variants = sorted({r["variant"] for r in base_run.rows})
    if baseline not in variants:
        raise UserError("--baseline-variant", f"{baseline!r} is not in {base_run.path.name}; "
                                              f"variants there: {', '.join(variants)}")
    notes = [n for n in {base_run.samples_note, run.samples_note} if n]
    use_workload = bool(run.samples) and bool(base_run.samples)
    drop = ("variant", "engine")
    base: dict[tuple[str, ...], dict[str, str]] = {}
    for row in base_run.rows:
        if row["variant"] == baseline:
            base.setdefault(row_key(base_run, row, use_workload, drop), row)
    metrics = _metric_columns(base_run, run)
    rows, unmatched = [], []
    # Each row is keyed without its variant and engine and matched to the baseline's row.
    for row in run.rows:
        if same and row["variant"] == baseline:
            continue
        ref = base.get(row_key(run, row, use_workload, drop))
        if ref is None:
            unmatched.append(_label(row))
            continue
        rows.append(_compare_pair(_label(row), ref, row, base_run.samples.get(ref["cell_index"]),
                                  run.samples.get(row["cell_index"]), metrics, default, per,
                                  resamples, seed))
    where = run.path.name if same else f"{run.path.name} vs {base_run.path.name}"
    return Comparison(f"variants of {where}: {baseline}", rows, [], unmatched, notes, default)


# --- output ---------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{(x - 1) * 100:+.1f}%" if math.isfinite(x) else "n/a"


def render(cmp: Comparison, show_all: bool = False, baseline_label: str = "old") -> str:
    lines = [f"# compare: {cmp.title}", ""]
    for n in cmp.notes:
        lines.append(f"note: {n}")
    if cmp.notes:
        lines.append("")
    head = ["row", "metric", baseline_label, "new", "change", "95% CI", "gate", "verdict"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in cmp.rows:
        if r.note:
            lines.append(f"| {r.label} | | | | | | | {r.note}"
                         + (" — REGRESSION (was ok)" if r.failed_now else "") + " |")
            continue
        for m in r.metrics:
            if not show_all and m.metric not in SHOWN and m.verdict in ("not gated",
                                                                        "below threshold"):
                continue
            ci = "no samples" if m.ci is None else f"{_pct(m.ci[0])}..{_pct(m.ci[1])}"
            gate = "" if m.threshold is None else f"{m.threshold * 100:g}% ({m.better} better)"
            verdict = m.verdict.upper() if m.verdict == "regression" else m.verdict
            lines.append(f"| {r.label} | {m.metric} | {m.old:.4g} | {m.new:.4g} | {_pct(m.ratio)} "
                         f"| {ci} | {gate} | {verdict} |")
    if cmp.only_old:
        lines += ["", f"only in {baseline_label}: " + "; ".join(cmp.only_old)]
    if cmp.only_new:
        lines += ["", "only in new (no match): " + "; ".join(cmp.only_new)]
    lines.append("")
    bad = cmp.regressed
    if bad:
        lines.append(f"REGRESSION in {len(bad)} of {len(cmp.rows)} rows:")
        for r in bad:
            if r.failed_now:
                lines.append(f"  {r.label}: was ok, now failed")
            for m in r.regressions:
                ci = "" if m.ci is None else f", 95% CI {_pct(m.ci[0])}..{_pct(m.ci[1])}"
                gate = m.threshold or 0.0
                lines.append(f"  {r.label}: {m.metric} {_pct(m.ratio)}{ci} (gate {gate * 100:g}%)")
    else:
        lines.append(f"no regression in {len(cmp.rows)} matched rows "
                     f"(gate: the whole 95% interval is worse than the threshold)")
    return "\n".join(lines) + "\n"

