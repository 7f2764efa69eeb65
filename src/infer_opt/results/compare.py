"""Comparing two runs (or variants inside one run) with a noise-aware regression gate.

Modes (commands/compare.py has the command line):
- within one run: every variant against `--baseline-variant B`, or each `--map 'X+p=X'` stack
  against its base; rows are joined on their workload. Variants of one workload are timed in
  interleaved rounds, so the change is the median of per-round ratios new/old, resampling
  rounds (estimate.paired); rows whose rounds do not match fall back to resampling each row's
  timed runs (estimate.unpaired);
- across two runs (OLD NEW): rows joined on their identity (model, variant, engine, device,
  workload and its parameters); `--map 'X+p=X'` joins NEW's `X+p` rows to OLD's `X` rows,
  `--baseline-variant B` every NEW row to OLD's `B` rows. Timed metrics are normalized by a
  reference variant present in both runs (default: the first of REFERENCE_CANDIDATES found in
  both; `--reference-variant` chooses): each row's metric is divided by the reference's on the
  same workload in its own run, and the change is new/old of those ratios, so a machine that is
  uniformly slower in NEW is reported once, as drift (the reference's own change, in the
  summary), not as a regression of every row. `--absolute` compares raw values (the drift is
  still reported). Memory and fidelity metrics are always compared raw: drift does not move
  them.

The gate: a gated metric is a REGRESSION only when (1) it has at least MIN_UNITS timed runs
(online rows: requests) per side, else "insufficient samples", never a verdict; (2) its whole
interval lies beyond the threshold (10% by default, `--fail-above`), not only its point; (3) the
absolute difference also exceeds the column's floor (schema.FLOORS: KL 1e-6 nats, queue 1 ms,
...). A point past the threshold whose interval reaches back inside it is "within noise".
Without samples a timed metric is judged on its point ratio and the output says "no samples";
memory and fidelity metrics are single measurements, judged on their point ratio and floor.

Multiple testing: one compare makes many tests (rows x gated metrics), and with 95% intervals
one in forty unchanged metrics would look "clearly worse" by chance. The gated intervals are
made simultaneous by Bonferroni: each is a 1 - 0.05/m interval for m tests with samples, so all
m hold together with probability >= 95% and the chance of any false regression in the whole
comparison is <= 2.5%. Why Bonferroni-widened intervals rather than Holm or Benjamini-Hochberg
on bootstrap p-values: the verdict stays one readable rule (the printed interval is the one that
decided); it is valid under any dependence between tests (rows of one run share one machine,
and BH needs positive dependence to hold); a CI gate fails on one false alarm, so the
family-wise rate, not the false discovery rate, is what to control; and Holm's extra power
only shows when many tests are significant at once, when the gate has already failed. The
bootstrap uses at least 40 m resamples, so the 0.025/m tails hold resamples. The output states
m and the confidence used.

Bootstrap: percentile intervals (Efron & Tibshirani 1993, ch. 13), seeded, so a verdict is
reproducible; whole timed runs (or requests) are resampled, never single token gaps.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from infer_opt.core.errors import UserError
from infer_opt.core.schema import direction, floor
from infer_opt.core.stats import Stats, interval
from infer_opt.results import estimate
from infer_opt.results.io import Run, read_run, samples_path_for
from infer_opt.results.io import parse_number as _num
from infer_opt.results.samples import MetricSamples, metric_samples

__all__ = ["compare", "compare_runs", "read_run", "render", "samples_path_for"]

# Identity columns a join uses from the CSV (the samples' workload dict adds the rest).
JOIN_COLUMNS = ["model", "variant", "engine", "device", "workload", "batch_size",
                "prompt_tokens", "new_tokens"]
# Workload keys that change how long a cell is measured, not what it measures.
NOT_IDENTITY_WORKLOAD_KEYS = {"repeats", "warmup_runs", "warmup_new_tokens", "min_repeats",
                              "max_repeats", "min_timed_s", "max_timed_s",
                              "target_precision_pct", "rounds"}
# Gated by default (a `--fail-above METRIC=X%` gates any other directed metric). ITL is left
# out: in a static row TPOT is the mean ITL, and gating both doubles one test.
DEFAULT_GATED = ["ttft_ms_p50", "tpot_ms_p50", "e2e_ms_p50", "queue_ms_p50", "*_per_s",
                 "weight_mb", "peak_rss_mb", "peak_device_mem_mb", "*kl*", "*agreement*",
                 "*match*", "*accuracy*", "*perplexity*", "*nonfinite*", "slo_met_pct"]
DEFAULT_THRESHOLD = 0.10
FAMILY_CONFIDENCE = 0.95  # all gated intervals of one comparison hold together this often
RESAMPLES_PER_TEST = 40  # resamples >= this x m, so the 0.025/m tails are not empty
REFERENCE_CANDIDATES = ("baseline", "kv-cache")
DRIFT_METRIC = "tpot_ms_p50"
# Metrics printed by default (all compared metrics with --all).
SHOWN = ["ttft_ms_p50", "tpot_ms_p50", "e2e_ms_p50", "itl_ms_p99", "decode_tokens_per_s",
         "output_tokens_per_s", "peak_rss_mb", "energy_j_per_output_token"]
# Latency, throughput and the per-run SLO share of online rows: they vary run to run, so they
# need enough timed runs for a verdict (memory and fidelity are single measurements).
_TIMED = re.compile(r"_ms(_[a-z0-9]+)?$|_per_s$|^slo_met_pct$|_per_output_token$|_per_j$")

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NOISE = "within noise"
BELOW = "below threshold"
BELOW_FLOOR = "below floor"
INSUFFICIENT = "insufficient samples"
NOT_GATED = "not gated"
DRIFT = "reference (drift)"


def is_timed(column: str) -> bool:
    """Latency and throughput columns: measured over timed runs, so they have samples."""
    return bool(_TIMED.search(column))


# --- arguments -------------------------------------------------------------------------------

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


def _split_map(spec: str) -> tuple[str, str, str]:
    """Split 'NEW=OLD' at the '=' outside brackets (variants carry 'name[key=value]')."""
    depth = 0
    for i, ch in enumerate(spec):
        depth += (ch == "[") - (ch == "]")
        if ch == "=" and depth == 0:
            return spec[:i].strip(), "=", spec[i + 1:].strip()
    return spec.strip(), "", ""


def parse_maps(specs: Sequence[str]) -> dict[str, str]:
    """['X+p=X'] -> {'X+p': 'X'}: NEW's rows of variant X+p are joined to OLD's rows of X."""
    out: dict[str, str] = {}
    for spec in specs:
        new, sep, old = _split_map(spec)
        if not sep or not new or not old or new in out:
            raise UserError("--map", f"expected NEW_VARIANT=OLD_VARIANT once per variant (e.g. "
                                     f"'kv-cache+myplugin=kv-cache'), got {spec!r}")
        out[new] = old
    return out


def gate_threshold(metric: str, default: float, per: dict[str, float]) -> float | None:
    for pattern, frac in per.items():
        if fnmatch.fnmatchcase(metric, pattern):
            return frac
    if any(fnmatch.fnmatchcase(metric, p) for p in DEFAULT_GATED):
        return default
    return None


# --- results ---------------------------------------------------------------------------------

@dataclass
class MetricResult:
    metric: str
    old: float
    new: float
    ratio: float  # the change new/old (normalized or paired where the mode says so)
    ci: tuple[float, float] | None  # None: no interval (no samples, insufficient, not gated)
    better: str
    threshold: float | None  # None: not gated
    verdict: str
    method: str = ""  # paired / unpaired / normalized / no samples / point / n=...


@dataclass
class RowResult:
    label: str
    old_status: str
    new_status: str
    metrics: list[MetricResult] = field(default_factory=list)
    note: str = ""

    @property
    def regressions(self) -> list[MetricResult]:
        return [m for m in self.metrics if m.verdict == REGRESSION]

    @property
    def failed_now(self) -> bool:
        return self.old_status == "ok" and self.new_status == "failed"


@dataclass
class Comparison:
    title: str
    mode: str
    rows: list[RowResult]
    only_old: list[str]
    only_new: list[str]
    notes: list[str]
    default_threshold: float
    tests_interval: int = 0  # gated row x metric tests with bootstrap intervals (m)
    tests_point: int = 0  # gated tests on point values (no samples, or single measurements)
    insufficient: int = 0
    confidence: float = FAMILY_CONFIDENCE  # of each gated interval
    drift: list[str] = field(default_factory=list)
    baseline_label: str = "old"

    @property
    def regressed(self) -> list[RowResult]:
        return [r for r in self.rows if r.regressions or r.failed_now]


# --- joining rows ----------------------------------------------------------------------------

def _label(row: dict[str, str]) -> str:
    parts = [row.get("variant", ""), f"{row.get('workload', '')}"]
    for col, short in (("batch_size", "bs"), ("policy", "policy"), ("arrival", "arrival"),
                       ("arrival_rate_per_s", "rate"), ("prefix_reuse", "reuse"),
                       ("prompt_tokens", "prompt"), ("new_tokens", "new")):
        if row.get(col):
            parts.append(f"{short}={row[col]}")
    return " ".join(parts)


def _workload_key(run: Run, row: dict[str, str]) -> str:
    s = run.samples_of(row)
    w = dict(s.get("workload") or {}) if s else {}
    for k in NOT_IDENTITY_WORKLOAD_KEYS:
        w.pop(k, None)
    return json.dumps(w, sort_keys=True)


def workload_key(run: Run, row: dict[str, str], use_workload: bool) -> tuple[str, ...]:
    """The row's identity without its variant and engine: what it was measured on."""
    key = tuple(row.get(c, "") for c in JOIN_COLUMNS if c not in ("variant", "engine"))
    return key + (_workload_key(run, row),) if use_workload else key


@dataclass
class _Pair:
    old: dict[str, str]
    new: dict[str, str]
    key: tuple[str, ...]  # workload key


def _join(old: Run, new: Run, same: bool, baseline: str | None, maps: dict[str, str],
          use_workload: bool) -> tuple[list[_Pair], list[str], list[str]]:
    """(pairs, labels only in old, labels of new rows with no match)."""
    index: dict[tuple[Any, ...], dict[str, str]] = {}
    count: dict[tuple[Any, ...], int] = {}
    for row in old.rows:  # a repeated identity gets #2, #3 so no row is silently lost
        k = (row["variant"], workload_key(old, row, use_workload))
        count[k] = count.get(k, 0) + 1
        index[k + (count[k],)] = row
    pairs, unmatched, used = [], [], set()
    seen: dict[tuple[Any, ...], int] = {}
    for row in new.rows:
        v, key = row["variant"], workload_key(new, row, use_workload)
        target = maps.get(v) or baseline or (None if same else v)
        if target is None or (same and target == v):
            continue  # within a run: only mapped rows, or rows against the baseline
        seen[(v, key)] = seen.get((v, key), 0) + 1
        ref = index.get((target, key, seen[(v, key)] if target == v else 1))
        if ref is None:
            unmatched.append(_label(row))
            continue
        used.add(id(ref))
        pairs.append(_Pair(ref, row, key))
    only_old = [] if same or baseline else [_label(r) for r in old.rows if id(r) not in used]
    return pairs, only_old, unmatched


def _variants(run: Run) -> list[str]:
    return sorted({r["variant"] for r in run.rows})


def _ok_variants(run: Run) -> set[str]:
    return {r["variant"] for r in run.rows if r["status"] == "ok"}


def choose_reference(old: Run, new: Run, asked: str | None) -> str | None:
    """The variant timed metrics are normalized by: `asked` (must be in both runs), else the
    first REFERENCE_CANDIDATES variant with ok rows in both, else None."""
    both = _ok_variants(old) & _ok_variants(new)
    if asked is not None:
        if asked not in both:
            raise UserError("--reference-variant", f"{asked!r} has no ok row in both "
                                                   f"{old.path.name} and {new.path.name}; in "
                                                   f"both: {', '.join(sorted(both)) or 'none'}")
        return asked
    return next((c for c in REFERENCE_CANDIDATES if c in both), None)


# --- one metric --------------------------------------------------------------------------------

def _declared_n(row: dict[str, str]) -> int | None:
    """Timed runs a row says it has (timed_runs, else repeats); None when it does not say."""
    for col in ("timed_runs", "repeats"):
        v = _num(row.get(col))
        if v is not None:
            return int(v)
    return None


def _samples(run: Run, row: dict[str, str], metric: str, value: float, notes: set[str]
             ) -> MetricSamples | None:
    """The samples behind `metric`, if they reproduce the row's value (else a note)."""
    try:
        ms = metric_samples(metric, run.samples_of(row))
    except (TypeError, ValueError):
        ms = None
    if ms is None or ms.n == 0:
        return None
    rebuilt = ms.pooled()
    if not math.isclose(rebuilt, value, rel_tol=1e-3, abs_tol=1e-2):
        notes.add(f"{run.path.name}: samples of {_label(row)} do not reproduce {metric} "
                  f"({value:.6g} in the row, {rebuilt:.6g} from the samples): summary only")
        return None
    return ms


def _ratio(new: float, old: float) -> float:
    if old == 0:
        return 1.0 if new == 0 else math.inf
    return new / old


def _worse(ratio: float, better: str) -> float:
    """How much worse, as a fraction (> 0 worse, < 0 better)."""
    return ratio - 1.0 if better == "lower" else 1.0 - ratio


def judge(m: MetricResult) -> str:
    """The verdict of a gated metric with its point ratio and (maybe) interval."""
    if m.threshold is None:
        return NOT_GATED
    worse = _worse(m.ratio, m.better)
    if m.ci is None:
        least, most = worse, worse  # no interval: the point is all there is
    else:
        a, b = _worse(m.ci[0], m.better), _worse(m.ci[1], m.better)
        least, most = min(a, b), max(a, b)
    if worse > m.threshold and least > m.threshold:
        verdict = REGRESSION
    elif -worse > m.threshold and -most > m.threshold:
        verdict = IMPROVEMENT
    elif abs(worse) > m.threshold:
        verdict = NOISE
    else:
        return BELOW
    if abs(m.new - m.old) <= floor(m.metric):
        return BELOW_FLOOR
    return verdict


@dataclass
class _Pending:
    result: MetricResult
    build: Callable[[int, list[int]], estimate.Estimate]  # (resamples, seed) -> estimate
    gated: bool


# --- the comparison ----------------------------------------------------------------------------

def compare(old: Run, new: Run | None = None, *, baseline: str | None = None,
            maps: Sequence[str] = (), reference: str | None = None, absolute: bool = False,
            thresholds: Sequence[str] = (), resamples: int = 2000, seed: int = 0) -> Comparison:
    """Compare NEW against OLD (or, with new None, variants inside OLD). See the module
    docstring for the modes; raises UserError for arguments that do not fit the files."""
    same = new is None
    new_run = old if new is None else new
    default, per = parse_thresholds(thresholds)
    mapping = parse_maps(maps)
    _check_arguments(old, new_run, same, baseline, mapping, reference, absolute)
    # The reference measures the drift in both modes; it divides the timed metrics unless
    # --absolute.
    drift_ref = None if same else choose_reference(old, new_run, reference)
    ref = None if absolute else drift_ref
    # The samples' workload dict joins rows only when both runs have samples.
    use_workload = bool(old.samples) and bool(new_run.samples)
    pairs, only_old, only_new = _join(old, new_run, same, baseline, mapping, use_workload)
    if not pairs:
        # A gate that matched nothing must not pass silently (wrong file, renamed variants).
        what = "no row to compare" if same else (
            f"no row of {new_run.path.name} matches a row of {old.path.name} on "
            f"{', '.join(JOIN_COLUMNS)}; to compare different variants use --baseline-variant "
            f"or --map")
        raise UserError("csv", what)

    notes = list(dict.fromkeys(old.notes + ([] if same else new_run.notes)))
    sample_notes: set[str] = set()
    refs_old = _reference_rows(old, ref, use_workload)
    refs_new = _reference_rows(new_run, ref, use_workload)
    theirs = set(new_run.columns)
    metrics = [c for c in old.columns if c in theirs and direction(c) is not None]
    rows: list[RowResult] = []
    pending: list[_Pending] = []
    for p in pairs:
        rr = RowResult(_label(p.new), p.old.get("status", ""), p.new.get("status", ""))
        rows.append(rr)
        if rr.old_status != "ok" or rr.new_status != "ok":
            why = p.new.get("reason") if rr.new_status != "ok" else p.old.get("reason")
            rr.note = (f"not compared: old {rr.old_status}, new {rr.new_status}"
                       + (f" ({why})" if why else ""))
            continue
        is_ref = ref is not None and p.old["variant"] == ref == p.new["variant"]
        ro = refs_old.get(p.key) if ref and not is_ref else None
        rn = refs_new.get(p.key) if ref and not is_ref else None
        for metric in metrics:
            item = _metric(metric, p, (old, new_run), (ro, rn), ref, is_ref, same,
                           gate_threshold(metric, default, per), sample_notes)
            if isinstance(item, _Pending):
                pending.append(item)
                rr.metrics.append(item.result)
            elif item is not None:
                rr.metrics.append(item)

    m, confidence = _bootstrap(pending, resamples, seed)

    cmp = Comparison(
        title=(f"variants of {old.path.name}" if same else f"{new_run.path.name} vs "
               f"{old.path.name}"),
        mode=_mode_line(same, baseline, mapping, ref, absolute),
        rows=rows, only_old=only_old, only_new=only_new,
        notes=notes + sorted(sample_notes), default_threshold=default,
        tests_interval=m,
        tests_point=sum(1 for r in rows for x in r.metrics
                        if x.threshold is not None and x.ci is None
                        and x.verdict not in (INSUFFICIENT, DRIFT)),
        insufficient=sum(1 for r in rows for x in r.metrics if x.verdict == INSUFFICIENT),
        confidence=confidence,
        baseline_label=baseline or ("base" if same else "old"))
    if not same:
        cmp.drift = _drift(old, new_run, drift_ref, use_workload, seed, resamples,
                           normalized=ref is not None)
        if drift_ref is None:
            shift = common_shift(rows)
            if shift:
                cmp.drift.append(shift)
    return cmp


def _check_arguments(old: Run, new: Run, same: bool, baseline: str | None,
                     mapping: dict[str, str], reference: str | None, absolute: bool) -> None:
    if same and baseline is None and not mapping:
        raise UserError("csv", "one file compares variants within its run: give "
                               "--baseline-variant VARIANT or --map NEW=OLD")
    if same and (reference is not None or absolute):
        raise UserError("--reference-variant" if reference else "--absolute",
                        "normalizing applies across two runs; one file compares within its run")
    if baseline is not None and baseline not in _variants(old):
        raise UserError("--baseline-variant", f"{baseline!r} is not in {old.path.name}; "
                                              f"variants there: {', '.join(_variants(old))}")
    for v_new, v_old in mapping.items():
        for run, v in ((new, v_new), (old, v_old)):
            if v not in _variants(run):
                raise UserError("--map", f"{v!r} is not a variant of {run.path.name}; variants "
                                         f"there: {', '.join(_variants(run))}")


def _bootstrap(pending: list[_Pending], resamples: int, seed: int) -> tuple[int, float]:
    """Run every pending estimate once m, the number of gated tests, is known; fill in the
    change, its interval and the verdict. Returns (m, confidence of each gated interval)."""
    m = sum(1 for x in pending if x.gated)
    confidence = 1.0 - (1.0 - FAMILY_CONFIDENCE) / max(m, 1)  # Bonferroni
    n_resamples = max(resamples, RESAMPLES_PER_TEST * m)
    for i, x in enumerate(pending):
        est = x.build(n_resamples, [seed, i])
        res = x.result
        res.ratio = est.point
        res.method = est.method + res.method
        if est.reps.size >= 2:
            res.ci = interval(est.reps, confidence if x.gated else FAMILY_CONFIDENCE)
        if x.gated:
            res.verdict = judge(res)
    return m, confidence


def compare_runs(old: Run, new: Run, thresholds: Sequence[str] = (), resamples: int = 2000,
                 seed: int = 0, **options: Any) -> Comparison:
    """NEW against OLD (compare() with two runs)."""
    return compare(old, new, thresholds=thresholds, resamples=resamples, seed=seed, **options)


def _reference_rows(run: Run, ref: str | None, use_workload: bool
                    ) -> dict[tuple[str, ...], dict[str, str]]:
    if ref is None:
        return {}
    out: dict[tuple[str, ...], dict[str, str]] = {}
    for row in run.rows:
        if row["variant"] == ref and row["status"] == "ok":
            out.setdefault(workload_key(run, row, use_workload), row)
    return out


def _metric(metric: str, p: _Pair, runs: tuple[Run, Run],
            refs: tuple[dict[str, str] | None, dict[str, str] | None], ref: str | None,
            is_ref: bool, same: bool, threshold: float | None, notes: set[str]
            ) -> MetricResult | _Pending | None:
    """One metric of one pair of rows: a result now (no interval to compute), a pending
    bootstrap, or None (not a metric of both rows)."""
    better = direction(metric)
    o, n = _num(p.old.get(metric)), _num(p.new.get(metric))
    if better is None or o is None or n is None:
        return None
    res = MetricResult(metric, o, n, _ratio(n, o), None, better, threshold, NOT_GATED)
    if not is_timed(metric):
        res.method = "single measurement"
        res.verdict = judge(res)
        return res
    if is_ref:  # the reference against itself: its change is the drift (summary), not a test
        res.threshold = None
        res.verdict = DRIFT if threshold is not None else NOT_GATED
    rows, sources = [p.old, p.new], list(runs)
    ro_v, rn_v = (_num(r.get(metric)) if r else None for r in refs)
    if ro_v and rn_v and ro_v > 0 and rn_v > 0:  # each run's reference on this workload
        res.ratio = _ratio(n / rn_v, o / ro_v)
        res.method = f"; normalized by {ref} (raw {_pct(_ratio(n, o))})"
        rows += [refs[0], refs[1]]  # type: ignore[list-item]
        sources += list(runs)
    elif ref is not None and not is_ref:
        res.method = f"; absolute: no {ref} value on this workload"
    if res.threshold is None and res.verdict != DRIFT:
        res.method = "point" + res.method  # shown, not gated: no interval to pay for
        return res
    sides = [_samples(run, row, metric, _num(row.get(metric)) or 0.0, notes)
             for run, row in zip(sources, rows)]
    counts = [s.independent_n if s is not None else _declared_n(row)
              for s, row in zip(sides, rows)]
    known = [c for c in counts if c is not None]
    if known and min(known) < estimate.MIN_UNITS:
        res.method = f"n={min(known)} < {estimate.MIN_UNITS}" + res.method
        res.verdict = DRIFT if is_ref else INSUFFICIENT
        return res
    if any(s is None for s in sides):
        res.method = "no samples" + res.method
        res.verdict = DRIFT if is_ref else judge(res)
        return res
    ms = [s for s in sides if s is not None]
    # Rounds are indices within one run: only rows of one run pair by round.

    def build(resamples: int, seed: list[int]) -> estimate.Estimate:
        if len(ms) == 4:
            return estimate.normalized(ms[2], ms[0], ms[3], ms[1], resamples, seed)
        return estimate.change(ms[0], ms[1], resamples, seed, pair=same)

    return _Pending(res, build, gated=not is_ref)


def _drift(old: Run, new: Run, ref: str | None, use_workload: bool, seed: int, resamples: int,
           normalized: bool) -> list[str]:
    """The reference variant's own change per workload (raw, 95% interval): the machine."""
    if ref is None:
        return []
    lines = []
    ro_rows = _reference_rows(old, ref, use_workload)
    rn_rows = _reference_rows(new, ref, use_workload)
    notes: set[str] = set()
    for i, (key, ro) in enumerate(ro_rows.items()):
        rn = rn_rows.get(key)
        o, n = _num(ro.get(DRIFT_METRIC)), _num(rn.get(DRIFT_METRIC)) if rn else None
        if rn is None or o is None or n is None:
            continue
        so = _samples(old, ro, DRIFT_METRIC, o, notes)
        sn = _samples(new, rn, DRIFT_METRIC, n, notes)
        ci = ""
        if so is not None and sn is not None and estimate.enough(so, sn):
            est = estimate.unpaired(so, sn, resamples, [seed, 10_000 + i])
            if est.reps.size >= 2:
                lo, hi = interval(est.reps, FAMILY_CONFIDENCE)
                ci = f" (95% CI {_pct(lo)}..{_pct(hi)})"
        lines.append(f"drift: {ref}'s own {DRIFT_METRIC} changed {_pct(_ratio(n, o))}{ci} on "
                     f"{_label(rn).removeprefix(ref + ' ')}")
    if lines:
        lines.append("drift is the machine (or code every variant shares): " + (
            "divided out of the normalized changes above; --absolute shows raw changes"
            if normalized else "included in every absolute change above"))
    return lines


def common_shift(rows: Sequence[RowResult], metric: str = DRIFT_METRIC) -> str:
    """One line on the median change of `metric` over all compared rows, or '' (< 3 rows).

    Without a reference variant in both runs this is the drift estimate: a load or clock change
    moves every row alike, one variant's regression moves one row, and the median is robust to
    a few rows that really changed.
    """
    ratios = [m.ratio for r in rows for m in r.metrics
              if m.metric == metric and math.isfinite(m.ratio) and m.ratio > 0]
    if len(ratios) < 3:
        return ""
    median = Stats.of(ratios).p50
    return (f"{metric} changed by a median of {_pct(median)} over {len(ratios)} rows (a shift "
            f"shared by every row points at the machine, not at one variant)")


def _mode_line(same: bool, baseline: str | None, maps: dict[str, str], ref: str | None,
               absolute: bool) -> str:
    joins = []
    if maps:
        joins.append("mapped " + ", ".join(f"{a} -> {b}" for a, b in maps.items()))
    if baseline:
        joins.append(f"every variant against {baseline}")
    if same:
        return ("within one run (" + "; ".join(joins) + "): paired by interleaved round where "
                "the rows share rounds, else unpaired")
    joined = "; ".join(joins) or "rows joined on their identity"
    if ref is not None:
        return (f"across two runs ({joined}): timed metrics normalized by {ref} on the same "
                f"workload in each run (--absolute for raw ratios)")
    why = "--absolute" if absolute else (f"no reference variant ({', '.join(REFERENCE_CANDIDATES)}"
                                         f" or --reference-variant) in both runs")
    return f"across two runs ({joined}): absolute ratios ({why}); machine drift is included"


# --- output ------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    if math.isinf(x):
        return "from 0"
    return f"{(x - 1) * 100:+.1f}%" if math.isfinite(x) else "n/a"


def _conf(c: float) -> str:
    return f"{c * 100:.4g}%"


def render(cmp: Comparison, show_all: bool = False) -> str:
    lines = [f"# compare: {cmp.title}", "", f"mode: {cmp.mode}", ""]
    for n in cmp.notes:
        lines.append(f"note: {n}")
    if cmp.notes:
        lines.append("")
    head = ["row", "metric", cmp.baseline_label, "new", "change", "interval", "method", "gate",
            "verdict"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in cmp.rows:
        if r.note:
            lines.append(f"| {r.label} | | | | | | | | {r.note}"
                         + (" — REGRESSION (was ok)" if r.failed_now else "") + " |")
            continue
        for m in r.metrics:
            if not show_all and m.metric not in SHOWN and m.verdict in (NOT_GATED, BELOW, DRIFT):
                continue
            ci = "" if m.ci is None else f"{_pct(m.ci[0])}..{_pct(m.ci[1])}"
            gate = "" if m.threshold is None else f"{m.threshold * 100:g}% ({m.better} better)"
            verdict = m.verdict.upper() if m.verdict == REGRESSION else m.verdict
            lines.append(f"| {r.label} | {m.metric} | {m.old:.4g} | {m.new:.4g} | "
                         f"{_pct(m.ratio)} | {ci} | {m.method.removeprefix('; ')} | {gate} | "
                         f"{verdict} |")
    if cmp.only_old:
        lines += ["", f"only in {cmp.baseline_label}: " + "; ".join(cmp.only_old)]
    if cmp.only_new:
        lines += ["", "only in new (no match): " + "; ".join(cmp.only_new)]
    lines += [""] + cmp.drift + [""] + [tests_line(cmp)]
    bad = cmp.regressed
    if bad:
        lines.append(f"REGRESSION in {len(bad)} of {len(cmp.rows)} rows:")
        for r in bad:
            if r.failed_now:
                lines.append(f"  {r.label}: was ok, now failed")
            for m in r.regressions:
                ci = "" if m.ci is None else (f", {_conf(cmp.confidence)} CI "
                                              f"{_pct(m.ci[0])}..{_pct(m.ci[1])}")
                gate = m.threshold or 0.0
                lines.append(f"  {r.label}: {m.metric} {_pct(m.ratio)}{ci} (gate {gate * 100:g}%)")
    else:
        unjudged = (f"; {cmp.insufficient} metrics could not be judged (insufficient samples)"
                    if cmp.insufficient else "")
        lines.append(f"no regression in {len(cmp.rows)} matched rows (gate: the whole interval "
                     f"is worse than the threshold){unjudged}")
    return "\n".join(lines) + "\n"


def tests_line(cmp: Comparison) -> str:
    """How many tests were made and how the false-alarm rate is held across them."""
    m = cmp.tests_interval
    text = (f"tests: {m + cmp.tests_point + cmp.insufficient} gated row x metric tests; {m} with "
            f"bootstrap intervals")
    if m:
        text += (f", each at {_conf(cmp.confidence)} (Bonferroni: 1 - 5%/{m}, so all {m} hold "
                 f"together with 95% probability)")
    text += f"; {cmp.tests_point} on point values"
    if cmp.insufficient:
        text += (f"; {cmp.insufficient} with insufficient samples (fewer than "
                 f"{estimate.MIN_UNITS} timed runs per side): no verdict")
    return text
