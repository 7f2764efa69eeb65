"""The samples behind one metric of one row, as compare uses them (format/samples.py reads
them from the samples line)."""

from __future__ import annotations

import math

from infer_opt.core.errors import UserError
from infer_opt.format.io import FIELD, ResultsFile
from infer_opt.format.io import parse_number as _num
from infer_opt.format.samples import MetricSamples, metric_samples
from infer_opt.results.compare.join import label


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
