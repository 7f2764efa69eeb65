"""Summary statistics and bootstrap intervals computed from raw samples, in one place.

Percentiles use linear interpolation between closest ranks (numpy's default, "type 7" of
Hyndman & Fan 1996), so p50 of [1, 2, 3, 4] is 2.5. std is the sample standard deviation (n-1),
0.0 for a single sample.

Bootstrap intervals are percentile intervals (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, ch. 13): resample the values with replacement, recompute the statistic, keep
the (1-c)/2 and (1+c)/2 quantiles of the recomputed values. The generator is seeded, so an
interval is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

STAT_NAMES = ("mean", "std", "p50", "p90", "p99", "min", "max")
# A tail percentile is reported only from enough samples to have one beyond it: below 10
# samples "p90" interpolates between the two largest values (it is the max, renamed), below
# 100 "p99" is the same for the top 1%. An empty column says "not enough samples", which a
# number would hide.
MIN_SAMPLES = {"p90": 10, "p99": 100}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """q in [0, 100]; sorted_values ascending and non-empty."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    rank = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    frac = rank - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass(frozen=True)
class Stats:
    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if not samples:
            raise ValueError("statistics of no samples")
        values = sorted(float(v) for v in samples)
        n = len(values)
        mean = math.fsum(values) / n
        var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return cls(
            mean=mean,
            std=math.sqrt(var),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            min=values[0],
            max=values[-1],
            count=n,
        )

    def columns(self, prefix: str) -> dict[str, float | str]:
        """{'<prefix>_mean': ..., '<prefix>_p50': ...} for every name in STAT_NAMES.

        mean, std, p50, min and max are always filled. p90 needs at least 10 samples and p99 at
        least 100 (MIN_SAMPLES); with fewer the column is "" (empty): an interpolated p99 of 6
        runs is the max under another name, and would be read as a tail latency.
        """
        d = asdict(self)
        return {f"{prefix}_{name}": ("" if self.count < MIN_SAMPLES.get(name, 0) else d[name])
                for name in STAT_NAMES}


# --- bootstrap -------------------------------------------------------------------------------

def bootstrap_median(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float | None, float | None]:
    """(median, low, high): the percentile-bootstrap interval of the median of `values`.

    One value gives no interval (low = high = None): nothing says how it would vary. Identical
    values give a zero-width interval equal to the median.
    """
    if not values:
        raise ValueError("bootstrap of no samples")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    point = percentile(sorted(float(v) for v in values), 50)
    if len(values) < 2:
        return point, None, None
    reps = median_replicates(values, resamples, seed)  # [resamples]
    lo, hi = interval(reps, confidence)
    return point, lo, hi


def median_replicates(values: Sequence[float], resamples: int, seed: int | Sequence[int]) -> Any:
    """Medians of `resamples` seeded resamples (with replacement) of values: ndarray [resamples]."""
    import numpy as np

    x = np.asarray(values, dtype=float)  # [n]
    idx = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))  # [R, n]
    return np.median(x[idx], axis=1)  # [R]; median == linear p50, as percentile() above


def interval(replicates: Any, confidence: float) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap replicates (percentile method)."""
    import numpy as np

    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(np.asarray(replicates, dtype=float), [tail, 100.0 - tail])
    return float(lo), float(hi)


def paired_ratios(old: Sequence[float], old_rounds: Sequence[int], new: Sequence[float],
                  new_rounds: Sequence[int]) -> list[float]:
    """new / old per round, for the rounds both sides have, in round order.

    In one run the variants of a workload are measured in interleaved rounds (each round one
    timed run of every variant, in a shuffled order), so the runs of two variants in the same
    round shared the machine's state; their ratio cancels what the round did to both.
    """
    if len(old) != len(old_rounds) or len(new) != len(new_rounds):
        raise ValueError("one round index per value is needed on each side")
    if len(set(old_rounds)) != len(old_rounds) or len(set(new_rounds)) != len(new_rounds):
        raise ValueError("a round appears twice on one side: runs cannot be paired by round")
    by_round = dict(zip(old_rounds, old))
    return [float(v) / float(by_round[r]) for r, v in sorted(zip(new_rounds, new))
            if r in by_round]


def bootstrap_paired_ratio(old: Sequence[float], old_rounds: Sequence[int],
                           new: Sequence[float], new_rounds: Sequence[int],
                           confidence: float = 0.95, resamples: int = 2000, seed: int = 0
                           ) -> tuple[float, float | None, float | None]:
    """(median per-round ratio new/old, low, high), resampling rounds (bootstrap_median of
    paired_ratios). Raises ValueError when no round is shared."""
    ratios = paired_ratios(old, old_rounds, new, new_rounds)
    if not ratios:
        raise ValueError("no round in common: the runs cannot be paired")
    return bootstrap_median(ratios, confidence, resamples, seed)
