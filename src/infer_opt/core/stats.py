"""Summary statistics computed from raw samples, in one place.

Percentiles use linear interpolation between closest ranks (numpy's default, "type 7" of
Hyndman & Fan 1996), so p50 of [1, 2, 3, 4] is 2.5. std is the sample standard deviation (n-1),
0.0 for a single sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

STAT_NAMES = ("mean", "std", "p50", "p90", "p99", "min", "max")


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

    def columns(self, prefix: str) -> dict[str, float]:
        """{'<prefix>_mean': ..., '<prefix>_p50': ...} for every name in STAT_NAMES."""
        d = asdict(self)
        return {f"{prefix}_{name}": d[name] for name in STAT_NAMES}
