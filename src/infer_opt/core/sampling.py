"""When to stop timing a cell: enough runs for a stated precision, within a budget.

Like MLPerf LoadGen (a run counts only past a minimum duration and query count) and pyperf
(a fixed minimum of runs, more when they disagree): time at least `min_repeats` runs and
`min_timed_s` seconds, then stop as soon as the median TPOT is known to `target_precision_pct`
(half-width of its bootstrap 95% interval, relative to the median), or when a cap is reached
(`max_repeats` runs, `max_timed_s` timed seconds). `min_repeats` is a floor the caps never cut:
every row has at least that many runs. The reason is recorded in the row (`sampling_stop`), so
a row that stopped on a cap says its precision target was not met.

`decide` runs between timed runs, so it is cheap: a few hundred seeded resamples of at most
`max_repeats` values (well under a millisecond).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infer_opt.core.stats import bootstrap_median

PRECISION = "precision"
MAX_REPEATS = "max_repeats"
MAX_TIMED_S = "max_timed_s"
STOP_REASONS = (PRECISION, MAX_REPEATS, MAX_TIMED_S)


@dataclass(frozen=True)
class SamplingRule:
    min_repeats: int = 5
    min_timed_s: float = 1.0
    target_precision_pct: float = 2.0
    max_repeats: int = 30
    max_timed_s: float = 120.0
    resamples: int = 300  # per decision: precision is a stopping rule, not a published number
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_repeats < 1:
            raise ValueError("min_repeats must be >= 1")
        if self.max_repeats < self.min_repeats:
            raise ValueError("max_repeats must be >= min_repeats")
        if self.target_precision_pct <= 0 or self.max_timed_s <= 0 or self.min_timed_s < 0:
            raise ValueError("target_precision_pct and max_timed_s must be > 0, "
                             "min_timed_s >= 0")

    def precision_pct(self, tpot_ms: Sequence[float]) -> float | None:
        """Half-width of the bootstrap 95% interval of the median, in % of the median; None
        below 2 values (no interval) or for a median of 0."""
        median, lo, hi = bootstrap_median(tpot_ms, 0.95, self.resamples, self.seed)
        if lo is None or hi is None or median <= 0:
            return None
        return 100.0 * (hi - lo) / 2.0 / median

    def decide(self, tpot_ms: Sequence[float], timed_s: float) -> str | None:
        """Given the per-run TPOT (ms) of the timed runs so far and their total timed seconds:
        None to time another run, else why to stop ("precision", "max_repeats",
        "max_timed_s"). Precision is checked first: a run that met it says so even at a cap.
        Nothing stops a cell below min_repeats runs (a floor: compare needs n to judge); the
        time cap holds below min_timed_s."""
        n = len(tpot_ms)
        if n < self.min_repeats:
            return None
        if timed_s >= self.min_timed_s:
            precision = self.precision_pct(tpot_ms)
            if precision is not None and precision <= self.target_precision_pct:
                return PRECISION
        if n >= self.max_repeats:
            return MAX_REPEATS
        if timed_s >= self.max_timed_s:
            return MAX_TIMED_S
        return None
