"""Rate sweep: the highest arrival rate whose latencies meet the SLO, found by search.

Start at a rate; double while the SLO holds (halve while it fails) until the boundary is
bracketed, then bisect the bracket a few times. Each probe is a full online run at that rate
(one row in the CSV), and a probe passes when at least `slo_target_pct` % of its requests met
every SLO given. Latency under load is noisy, and the search assumes it grows with the rate;
the rows keep every probe, so a reader can see where that did not hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SweepResult:
    best_rate: float | None  # highest rate that passed (None: even the lowest failed)
    first_fail: float | None  # lowest rate seen to fail above best_rate (None: never failed)
    probes: list[tuple[float, bool]] = field(default_factory=list)  # (rate, passed) in order


def search_max_rate(passes: Callable[[float], bool], start: float, max_doublings: int = 5,
                    bisect_steps: int = 3) -> SweepResult:
    probes: list[tuple[float, bool]] = []

    def probe(rate: float) -> bool:
        ok = passes(rate)
        probes.append((rate, ok))
        return ok

    lo: float | None = None
    hi: float | None = None
    rate = start
    if probe(rate):
        lo = rate
        for _ in range(max_doublings):
            rate *= 2
            if probe(rate):
                lo = rate
            else:
                hi = rate
                break
    else:
        hi = rate
        for _ in range(max_doublings):
            rate /= 2
            if probe(rate):
                lo = rate
                break
            hi = rate
    if lo is not None and hi is not None:
        for _ in range(bisect_steps):
            mid = (lo + hi) / 2
            if probe(mid):
                lo = mid
            else:
                hi = mid
    return SweepResult(best_rate=lo, first_fail=hi, probes=probes)
