"""Bootstrap estimates of a change new / old between two rows' samples of one metric.

Three estimators, chosen by what the data allows (results/compare/gate.py picks):
- paired (two rows of one run whose timed runs share >= MIN_UNITS interleaved rounds, median
  columns only): per-round ratios new/old; point = their median; resample rounds. A round's
  runs shared the machine's state, so their ratio cancels it (randomized interleaved trials);
- unpaired: point = stat(new) / stat(old) of the pooled values; each side's units (timed runs
  or requests) resampled independently;
- normalized (two runs, a reference variant R in both): (row/R in NEW) / (row/R in OLD), each
  within-run ratio paired or unpaired as above, the two runs resampled independently. A machine
  uniformly slower in NEW moves row and R alike and cancels; R's own change is the drift.

Every estimate keeps its bootstrap replicates, so the caller chooses the interval's confidence
after it knows how many tests were made (multiple testing: results/compare/__init__.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from infer_opt.core.stats import median_replicates
from infer_opt.format.samples import REQUEST, RUN, MetricSamples

MIN_UNITS = 3  # independent units (timed runs) per side below which no verdict is given
_QUANTILE = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
_CHUNK_VALUES = 2_000_000  # floats per resampling chunk (16 MB), whatever the group sizes


@dataclass
class Estimate:
    point: float
    reps: Any  # ndarray [resamples]: bootstrap replicates of point (non-finite ones dropped)
    method: str  # how it was estimated, for the output: "paired, 6 rounds", "unpaired", ...


def _stat_rows(y: Any, stat: str) -> Any:
    """The statistic of each row of y [b, L], ignoring NaN padding -> [b]; percentiles by
    linear interpolation between closest ranks, as core.stats.percentile."""
    if stat == "mean":
        return np.nanmean(y, axis=1)
    s = np.sort(y, axis=1)  # NaN sorts last
    count = np.sum(~np.isnan(y), axis=1)  # [b]
    rank = (count - 1) * _QUANTILE[stat] / 100.0
    lo = np.floor(rank).astype(int)
    hi = np.ceil(rank).astype(int)
    v_lo = np.take_along_axis(s, lo[:, None], axis=1)[:, 0]
    v_hi = np.take_along_axis(s, hi[:, None], axis=1)[:, 0]
    return v_lo + (v_hi - v_lo) * (rank - lo)


def level_replicates(ms: MetricSamples, resamples: int, rng: Any) -> Any:
    """stat of the pooled values of `ms` over `resamples` resamples of its units -> [R].
    Requests grouped in several runs are resampled in two stages (runs, then requests)."""
    if ms.unit == REQUEST and ms.rounds is not None and ms.independent_n > 1:
        return _clustered_replicates(ms, resamples, rng)
    n = ms.n
    width = max(len(g) for g in ms.groups)
    x = np.full((n, width), np.nan)  # [units, values per unit], NaN-padded
    for i, g in enumerate(ms.groups):
        x[i, : len(g)] = g
    out = np.empty(resamples)
    chunk = max(1, _CHUNK_VALUES // (n * width))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(b, n))  # [b, n] units drawn with replacement
        out[start : start + b] = _stat_rows(x[idx].reshape(b, n * width), ms.stat)
    return out


def _clustered_replicates(ms: MetricSamples, resamples: int, rng: Any) -> Any:
    """Two-stage bootstrap: draw the runs with replacement, then within each drawn run its
    own requests with replacement; stat of the pooled values -> [R]. Requests that shared a
    run's batches and machine state move together, so the interval reflects run-to-run
    spread, not only request-to-request spread."""
    assert ms.rounds is not None
    runs = sorted(set(ms.rounds))
    members = [[i for i, r in enumerate(ms.rounds) if r == run] for run in runs]
    k, m = len(runs), max(len(g) for g in members)
    width = max(len(g) for g in ms.groups)
    x = np.full((k, m, width), np.nan)  # [runs, requests of the run, values per request]
    for a, idx in enumerate(members):
        for j, i in enumerate(idx):
            x[a, j, : len(ms.groups[i])] = ms.groups[i]
    sizes = np.array([len(g) for g in members])  # [k]
    out = np.empty(resamples)
    chunk = max(1, _CHUNK_VALUES // (k * m * width))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        pick = rng.integers(0, k, size=(b, k))  # [b, k] runs drawn
        n_in = sizes[pick]  # [b, k] requests in each drawn run
        req = np.floor(rng.random((b, k, m)) * n_in[:, :, None]).astype(int)  # [b, k, m]
        y = x[pick[:, :, None], req]  # [b, k, m, width]
        y[np.arange(m)[None, None, :] >= n_in[:, :, None]] = np.nan  # a run's own count
        out[start : start + b] = _stat_rows(y.reshape(b, k * m * width), ms.stat)
    return out


def _finite(a: Any) -> Any:
    return a[np.isfinite(a)]


def common_rounds(old: MetricSamples, new: MetricSamples) -> list[int]:
    if old.rounds is None or new.rounds is None:
        return []
    return sorted(set(old.rounds) & set(new.rounds))


def can_pair(old: MetricSamples, new: MetricSamples) -> bool:
    """Paired only for medians: the median of per-round ratios estimates a change in the
    median, not in a p90 or a mean."""
    return (old.unit == new.unit == RUN and old.stat == new.stat == "p50"
            and len(common_rounds(old, new)) >= MIN_UNITS)


def paired(old: MetricSamples, new: MetricSamples, resamples: int, seed: Sequence[int]
           ) -> Estimate:
    rounds = common_rounds(old, new)
    assert old.rounds is not None and new.rounds is not None
    by_old = dict(zip(old.rounds, old.unit_values()))
    by_new = dict(zip(new.rounds, new.unit_values()))
    ratios = np.array([by_new[r] / by_old[r] for r in rounds])  # [rounds]
    point = float(np.median(ratios))
    reps = median_replicates(list(ratios), resamples, list(seed))
    return Estimate(point, _finite(reps), f"paired, {len(rounds)} rounds")


def unpaired(old: MetricSamples, new: MetricSamples, resamples: int, seed: Sequence[int]
             ) -> Estimate:
    a = level_replicates(old, resamples, np.random.default_rng([*seed, 0]))
    b = level_replicates(new, resamples, np.random.default_rng([*seed, 1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = b / a
    how = f"unpaired, {old.n}/{new.n} {old.unit}s"
    if old.unit == REQUEST and (old.independent_n > 1 or new.independent_n > 1):
        how += f" in {old.independent_n}/{new.independent_n} runs"
    return Estimate(new.pooled() / old.pooled(), _finite(reps), how)


def change(old: MetricSamples, new: MetricSamples, resamples: int, seed: Sequence[int],
           pair: bool = True) -> Estimate:
    """new / old, paired by round when allowed (pair) and possible, else unpaired."""
    if pair and can_pair(old, new):
        return paired(old, new, resamples, seed)
    return unpaired(old, new, resamples, seed)


def normalized(ref_old: MetricSamples, old: MetricSamples, ref_new: MetricSamples,
               new: MetricSamples, resamples: int, seed: Sequence[int]) -> Estimate:
    """(new / ref_new) / (old / ref_old): each run's row against its own reference."""
    q_old = change(ref_old, old, resamples, [*seed, 0])
    q_new = change(ref_new, new, resamples, [*seed, 1])
    m = min(q_old.reps.size, q_new.reps.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = q_new.reps[:m] / q_old.reps[:m]
    how = "paired" if q_old.method.startswith("paired") and q_new.method.startswith(
        "paired") else "unpaired"
    return Estimate(q_new.point / q_old.point, _finite(reps), how)


def enough(*sides: MetricSamples) -> bool:
    return all(s.independent_n >= MIN_UNITS for s in sides)
