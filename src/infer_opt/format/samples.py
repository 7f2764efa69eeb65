"""Which raw values stand behind a metric column of a row (the samples line: format/io.py).

A column `<metric>_<stat>` (stat: mean, p50, p90, p99), or a bare throughput column (the median
over timed runs), is rebuilt as groups of values, one group per resampling unit:
- static rows: the unit is a timed run; `runs[metric]` holds one value per run (a group of
  one), `itl_ms` one group of token gaps per run; each run carries its interleaved `round`;
- online rows: the unit is a request (`requests`, every request of every timed run); a
  request's `itl_ms` is its group of gaps; each request carries the round (timed run) that
  served it. Requests of one run share its batches and its machine state, so they are not
  independent: the bootstrap draws runs first, then requests within each drawn run
  (results/estimate.py), and a verdict needs enough runs, not only enough requests.
Resampling whole units keeps the values of one run (or request) together, so correlated gaps
are not mistaken for independent evidence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from infer_opt.core.stats import percentile

STATS = ("mean", "p50", "p90", "p99")
RUN = "run"
REQUEST = "request"


@dataclass(frozen=True)
class MetricSamples:
    groups: tuple[tuple[float, ...], ...]  # one tuple of values per unit
    rounds: tuple[int, ...] | None  # the round (timed run) of each unit: pairing, clusters
    stat: str  # what the row's column takes of the pooled values: mean, p50, p90 or p99
    unit: str  # RUN or REQUEST

    @property
    def n(self) -> int:
        return len(self.groups)

    @property
    def independent_n(self) -> int:
        """Independent units: timed runs (requests of one run are one cluster)."""
        if self.unit == REQUEST and self.rounds is not None:
            return len(set(self.rounds))
        return self.n

    def pooled(self) -> float:
        """The column's statistic over every value of every unit, as the row computed it."""
        return statistic([v for g in self.groups for v in g], self.stat)

    def unit_values(self) -> list[float]:
        """The statistic of each unit on its own (the value itself for a group of one)."""
        return [statistic(list(g), self.stat) for g in self.groups]


def statistic(values: list[float], stat: str) -> float:
    if stat == "mean":
        return math.fsum(values) / len(values)
    return percentile(sorted(values), float(stat[1:]))


def split_column(column: str) -> tuple[str, str]:
    """'tpot_ms_p50' -> ('tpot_ms', 'p50'); a bare column ('decode_tokens_per_s') is the
    median over runs: (column, 'p50')."""
    m = re.fullmatch(r"(.+)_(mean|p50|p90|p99)", column)
    return (m.group(1), m.group(2)) if m else (column, "p50")


def metric_samples(column: str, s: dict[str, Any] | None) -> MetricSamples | None:
    """The samples behind `column` in samples line `s`, or None when the line has none."""
    if not s:
        return None
    base, stat = split_column(column)
    requests = s.get("requests") or []
    if requests and any(base in r for r in requests):
        groups, req_rounds = [], []
        for r in requests:
            v = r.get(base)
            if isinstance(v, list):
                if v:
                    groups.append(tuple(float(x) for x in v))
                    req_rounds.append(r.get("round"))
            elif v is not None:  # tpot_ms is null for a 1-token answer
                groups.append((float(v),))
                req_rounds.append(r.get("round"))
        clusters = (tuple(int(x) for x in req_rounds)
                    if all(isinstance(x, int) for x in req_rounds) else None)
        return MetricSamples(tuple(groups), clusters, stat, REQUEST) if groups else None
    runs = s.get("runs") or {}
    rounds = runs.get("round")
    if base in runs and base != "round" and runs[base]:
        return MetricSamples(tuple((float(v),) for v in runs[base]),
                             tuple(rounds) if rounds else None, stat, RUN)
    itl = s.get("itl_ms")
    if base == "itl_ms" and itl and all(itl):
        same = rounds is not None and len(rounds) == len(itl)
        return MetricSamples(tuple(tuple(float(x) for x in g) for g in itl),
                             tuple(rounds) if same else None, stat, RUN)
    return None


def same_rounds(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two rows' round indices name the same rounds: both were timed by one job (a
    group, or one chunk of max_workers of its variants; round indices restart in every job).
    Samples written before the "job" key existed carry none: they pair as before."""
    if not a or not b:
        return False
    return a.get("job") == b.get("job")
