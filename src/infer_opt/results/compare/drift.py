"""Across two runs, the machine's own change: the reference variant that timed metrics are
normalized by, its drift per workload, and the shift every row shares when there is none."""

from __future__ import annotations

import math
from collections.abc import Sequence

from infer_opt.core.errors import UserError
from infer_opt.core.stats import Stats, interval
from infer_opt.format.io import ResultsFile
from infer_opt.format.io import parse_number as _num
from infer_opt.results import estimate
from infer_opt.results.compare.gate import row_samples
from infer_opt.results.compare.join import join_key, label, ok_variants
from infer_opt.results.compare.verdict import FAMILY_CONFIDENCE, RowResult, pct, ratio

REFERENCE_CANDIDATES = ("baseline", "kv-cache")
DRIFT_METRIC = "tpot_ms_p50"


def choose_reference(old: ResultsFile, new: ResultsFile, asked: str | None) -> str | None:
    """The variant timed metrics are normalized by: `asked` (must be in both runs), else the
    first REFERENCE_CANDIDATES variant with ok rows in both, else None."""
    both = ok_variants(old) & ok_variants(new)
    if asked is not None:
        if asked not in both:
            raise UserError("--reference-variant", f"{asked!r} has no ok row in both "
                                                   f"{old.path.name} and {new.path.name}; in "
                                                   f"both: {', '.join(sorted(both)) or 'none'}")
        return asked
    return next((c for c in REFERENCE_CANDIDATES if c in both), None)


def reference_rows(run: ResultsFile, ref: str | None, use_workload: bool
                   ) -> dict[tuple[str, ...], dict[str, str]]:
    """The reference variant's ok row per join key."""
    if ref is None:
        return {}
    out: dict[tuple[str, ...], dict[str, str]] = {}
    for row in run.rows:
        if row["variant"] == ref and row["status"] == "ok":
            out.setdefault(join_key(run, row, use_workload), row)
    return out


def drift(old: ResultsFile, new: ResultsFile, ref: str | None, use_workload: bool, seed: int,
          resamples: int, normalized: bool, strict: bool) -> list[str]:
    """The reference variant's own change per workload (raw, 95% interval): the machine."""
    if ref is None:
        return []
    lines = []
    ro_rows = reference_rows(old, ref, use_workload)
    rn_rows = reference_rows(new, ref, use_workload)
    notes: set[str] = set()
    for i, (key, ro) in enumerate(ro_rows.items()):
        rn = rn_rows.get(key)
        o, n = _num(ro.get(DRIFT_METRIC)), _num(rn.get(DRIFT_METRIC)) if rn else None
        if rn is None or o is None or n is None:
            continue
        so = row_samples(old, ro, DRIFT_METRIC, o, notes, strict)
        sn = row_samples(new, rn, DRIFT_METRIC, n, notes, strict)
        ci = ""
        if so is not None and sn is not None and estimate.enough(so, sn):
            est = estimate.unpaired(so, sn, resamples, [seed, 10_000 + i])
            if est.reps.size >= 2:
                lo, hi = interval(est.reps, FAMILY_CONFIDENCE)
                ci = f" (95% CI {pct(lo)}..{pct(hi)})"
        lines.append(f"drift: {ref}'s own {DRIFT_METRIC} changed {pct(ratio(n, o))}{ci} on "
                     f"{label(rn).removeprefix(ref + ' ')}")
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
    return (f"{metric} changed by a median of {pct(median)} over {len(ratios)} rows (a shift "
            f"shared by every row points at the machine, not at one variant)")


def mode_line(same: bool, baseline: str | None, maps: dict[str, str], ref: str | None,
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
