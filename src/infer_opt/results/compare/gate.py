"""The regression gate: thresholds, the verdict rule, the samples behind a row's metric, and
one metric of one pair of rows
(normalized by the reference across runs, paired by round within one), with simultaneous
(Bonferroni) intervals over every gated test of the comparison. The rules are stated in
results/compare/__init__.py."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from infer_opt.core.errors import UserError
from infer_opt.core.stats import interval
from infer_opt.format.columns import column
from infer_opt.format.io import FIELD, ResultsFile
from infer_opt.format.io import parse_number as _num
from infer_opt.format.samples import MetricSamples, metric_samples
from infer_opt.results import estimate
from infer_opt.results.compare.join import Pair, label
from infer_opt.results.compare.verdict import (
    BELOW,
    BELOW_FLOOR,
    DRIFT,
    FAMILY_CONFIDENCE,
    IMPROVEMENT,
    INSUFFICIENT,
    NOISE,
    NOT_GATED,
    REGRESSION,
    MetricResult,
    pct,
    ratio,
)

DEFAULT_THRESHOLD = 0.10
RESAMPLES_PER_TEST = 40  # resamples >= this x m, so the 0.025/m tails are not empty


def declared_n(row: dict[str, str]) -> int | None:
    """Timed runs a row says it has (timed_runs, else repeats); None when it does not say."""
    for col in ("timed_runs", "repeats"):
        v = _num(row.get(col))
        if v is not None:
            return int(v)
    return None


def row_samples(run: ResultsFile, row: dict[str, str], metric: str, value: float,
                notes: set[str], strict: bool) -> MetricSamples | None:
    """The samples behind `metric`, if they reproduce the row's value. Samples that contradict
    their row are a damaged file: refused (strict), else a note and point values."""
    try:
        ms = metric_samples(metric, run.samples_of(row))
    except (TypeError, ValueError):
        ms = None
    if ms is None or ms.n == 0:
        return None
    rebuilt = ms.pooled()
    if not math.isclose(rebuilt, value, rel_tol=1e-3, abs_tol=1e-2):
        problem = (f"{run.path.name}: samples of {label(row)} do not reproduce {metric} "
                   f"({value:.6g} in the row, {rebuilt:.6g} from the samples)")
        if strict:
            raise UserError(FIELD, f"{problem} (--point-ratios judges on point values)")
        notes.add(f"{problem}: summary only")
        return None
    return ms


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
        name = name.strip()
        if name and not column(name).gateable:  # a glob simply skips such columns
            raise UserError("--fail-above", f"{name} is one measurement per row whose "
                                            f"run-to-run spread is unknown: it is shown, never "
                                            f"gated")
        if name:
            per[name] = frac
        else:
            default = frac
    return default, per


def gate_threshold(metric: str, default: float, per: dict[str, float]) -> float | None:
    """The threshold a metric is gated at (column table: gated, gateable), None: not gated."""
    meaning = column(metric)
    if not meaning.gateable or meaning.better is None:
        return None
    for pattern, frac in per.items():
        if fnmatch.fnmatchcase(metric, pattern):
            return frac
    return default if meaning.gated else None


def _worse(r: float, better: str) -> float:
    """How much worse, as a fraction (> 0 worse, < 0 better)."""
    return r - 1.0 if better == "lower" else 1.0 - r


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
    if abs(m.new - m.old) <= column(m.metric).floor:
        return BELOW_FLOOR
    return verdict


@dataclass
class Pending:
    result: MetricResult
    build: Callable[[int, list[int]], estimate.Estimate]  # (resamples, seed) -> estimate
    gated: bool


def measure(metric: str, p: Pair, runs: tuple[ResultsFile, ResultsFile],
            refs: tuple[dict[str, str] | None, dict[str, str] | None], ref: str | None,
            is_ref: bool, same: bool, threshold: float | None, notes: set[str], strict: bool
            ) -> MetricResult | Pending | None:
    """One metric of one pair of rows: a result now (no interval to compute), a pending
    bootstrap, or None (not a metric of both rows)."""
    meaning = column(metric)
    o, n = _num(p.old.get(metric)), _num(p.new.get(metric))
    if meaning.better is None or o is None or n is None:
        return None
    res = MetricResult(metric, o, n, ratio(n, o), None, meaning.better, threshold, NOT_GATED)
    if not meaning.timed:
        res.method = "single measurement"
        res.verdict = judge(res)
        return res
    if is_ref:  # the reference against itself: its change is the drift (summary), not a test
        res.threshold = None
        res.verdict = DRIFT if threshold is not None else NOT_GATED
    rows, sources = [p.old, p.new], list(runs)
    ro_v, rn_v = (_num(r.get(metric)) if r else None for r in refs)
    if ro_v and rn_v and ro_v > 0 and rn_v > 0:  # each run's reference on this workload
        res.ratio = ratio(n / rn_v, o / ro_v)
        res.method = f"; normalized by {ref} (raw {pct(ratio(n, o))})"
        rows += [refs[0], refs[1]]  # type: ignore[list-item]
        sources += list(runs)
    elif ref is not None and not is_ref:
        res.method = f"; absolute: no {ref} value on this workload"
    if res.threshold is None and res.verdict != DRIFT:
        res.method = "point" + res.method  # shown, not gated: no interval to pay for
        return res
    sides = [row_samples(run, row, metric, _num(row.get(metric)) or 0.0, notes, strict)
             for run, row in zip(sources, rows)]
    counts = [s.independent_n if s is not None else declared_n(row)
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

    return Pending(res, build, gated=not is_ref)


def bootstrap(pending: list[Pending], resamples: int, seed: int) -> tuple[int, float]:
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
