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
absolute difference also exceeds the column's floor (format/columns.Column.floor: KL 1e-6
nats, queue 1 ms, ...). A point past the threshold whose interval reaches back inside it is "within noise".
A samples file that is missing or corrupt, or samples that do not reproduce their row, refuse
the comparison (exit 2) unless `--point-ratios` asks for point values: a verdict must not change
because a file went missing. A row whose samples line has no values for a metric is judged on
its point ratio and the output says "no samples". Fidelity metrics and weight size are single
measurements, judged on their point ratio and floor; peak memory is one number per row whose
run-to-run spread is unknown: shown, never gated (format/columns.Column.gateable).
What is timed, gated, shown, and each floor: the column table, format/columns.py.

Modules: join.py (which rows meet), drift.py (the reference, normalization and drift),
gate.py (one metric: its samples, change, interval and verdict), render.py (markdown).

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

from collections.abc import Sequence
from typing import Any

from infer_opt.core.errors import UserError
from infer_opt.format.columns import column
from infer_opt.format.io import ResultsFile
from infer_opt.results.compare.drift import (
    REFERENCE_CANDIDATES,
    choose_reference,
    common_shift,
    drift,
    mode_line,
    reference_rows,
)
from infer_opt.results.compare.gate import (
    DEFAULT_THRESHOLD,
    Pending,
    bootstrap,
    gate_threshold,
    judge,
    measure,
    parse_thresholds,
)
from infer_opt.results.compare.join import (
    JOIN_COLUMNS,
    join,
    label,
    parse_maps,
    variants,
)
from infer_opt.results.compare.render import render, tests_line
from infer_opt.results.compare.verdict import (
    DRIFT,
    FAMILY_CONFIDENCE,
    IMPROVEMENT,
    INSUFFICIENT,
    NOT_GATED,
    REGRESSION,
    Comparison,
    MetricResult,
    RowResult,
)

__all__ = ["DEFAULT_THRESHOLD", "FAMILY_CONFIDENCE", "IMPROVEMENT", "INSUFFICIENT", "NOT_GATED",
           "REFERENCE_CANDIDATES", "REGRESSION", "Comparison", "MetricResult", "RowResult",
           "compare", "compare_runs", "gate_threshold", "judge", "parse_maps",
           "parse_thresholds", "render", "tests_line"]


def compare(old: ResultsFile, new: ResultsFile | None = None, *, baseline: str | None = None,
            maps: Sequence[str] = (), reference: str | None = None, absolute: bool = False,
            thresholds: Sequence[str] = (), resamples: int = 2000, seed: int = 0,
            point_ratios: bool = False) -> Comparison:
    """Compare NEW against OLD (or, with new None, variants inside OLD). See the module
    docstring for the modes; raises UserError for arguments that do not fit the files, and
    (unless point_ratios) for samples that contradict their rows."""
    same = new is None
    new_run = old if new is None else new
    strict = not point_ratios
    default, per = parse_thresholds(thresholds)
    mapping = parse_maps(maps)
    _check_arguments(old, new_run, same, baseline, mapping, reference, absolute)
    # The reference measures the drift in both modes; it divides the timed metrics unless
    # --absolute.
    drift_ref = None if same else choose_reference(old, new_run, reference)
    ref = None if absolute else drift_ref
    # The samples' workload dict joins rows only when both runs have samples.
    use_workload = bool(old.samples) and bool(new_run.samples)
    pairs, only_old, only_new = join(old, new_run, same, baseline, mapping, use_workload)
    if not pairs:
        # A gate that matched nothing must not pass silently (wrong file, renamed variants).
        what = "no row to compare" if same else (
            f"no row of {new_run.path.name} matches a row of {old.path.name} on "
            f"{', '.join(JOIN_COLUMNS)}; to compare different variants use --baseline-variant "
            f"or --map")
        raise UserError("csv", what)

    notes = list(dict.fromkeys(old.notes + ([] if same else new_run.notes)))
    sample_notes: set[str] = set()
    refs_old = reference_rows(old, ref, use_workload)
    refs_new = reference_rows(new_run, ref, use_workload)
    theirs = set(new_run.columns)
    metrics = [c for c in old.columns if c in theirs and column(c).better is not None]
    rows: list[RowResult] = []
    pending: list[Pending] = []
    for p in pairs:
        rr = RowResult(label(p.new), p.old.get("status", ""), p.new.get("status", ""))
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
            item = measure(metric, p, (old, new_run), (ro, rn), ref, is_ref, same,
                           gate_threshold(metric, default, per), sample_notes, strict)
            if isinstance(item, Pending):
                pending.append(item)
                rr.metrics.append(item.result)
            elif item is not None:
                rr.metrics.append(item)

    m, confidence = bootstrap(pending, resamples, seed)

    cmp = Comparison(
        old_name=old.path.name, new_name=None if same else new_run.path.name,
        mode=mode_line(same, baseline, mapping, ref, absolute),
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
        cmp.drift = drift(old, new_run, drift_ref, use_workload, seed, resamples,
                          normalized=ref is not None, strict=strict)
        if drift_ref is None:
            shift = common_shift(rows)
            if shift:
                cmp.drift.append(shift)
    return cmp


def _check_arguments(old: ResultsFile, new: ResultsFile, same: bool, baseline: str | None,
                     mapping: dict[str, str], reference: str | None, absolute: bool) -> None:
    if same and baseline is None and not mapping:
        raise UserError("csv", "one file compares variants within its run: give "
                               "--baseline-variant VARIANT or --map NEW=OLD")
    if same and (reference is not None or absolute):
        raise UserError("--reference-variant" if reference else "--absolute",
                        "normalizing applies across two runs; one file compares within its run")
    if baseline is not None and baseline not in variants(old):
        raise UserError("--baseline-variant", f"{baseline!r} is not in {old.path.name}; "
                                              f"variants there: {', '.join(variants(old))}")
    for v_new, v_old in mapping.items():
        for run, v in ((new, v_new), (old, v_old)):
            if v not in variants(run):
                raise UserError("--map", f"{v!r} is not a variant of {run.path.name}; variants "
                                         f"there: {', '.join(variants(run))}")


def compare_runs(old: ResultsFile, new: ResultsFile, thresholds: Sequence[str] = (),
                 resamples: int = 2000, seed: int = 0, **options: Any) -> Comparison:
    """NEW against OLD (compare() with two runs)."""
    return compare(old, new, thresholds=thresholds, resamples=resamples, seed=seed, **options)
