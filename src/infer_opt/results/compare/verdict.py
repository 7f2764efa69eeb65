"""What a comparison finds: one metric of one pair of rows, a row, the whole comparison, and
the words the verdicts are printed with."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NOISE = "within noise"
BELOW = "below threshold"
BELOW_FLOOR = "below floor"
INSUFFICIENT = "insufficient samples"
NOT_GATED = "not gated"
DRIFT = "reference (drift)"
FAMILY_CONFIDENCE = 0.95  # all gated intervals of one comparison hold together this often


@dataclass
class MetricResult:
    metric: str
    old: float
    new: float
    ratio: float  # the change new/old (normalized or paired where the mode says so)
    ci: tuple[float, float] | None  # None: no interval (no samples, insufficient, not gated)
    better: str
    threshold: float | None  # None: not gated
    verdict: str
    method: str = ""  # paired / unpaired / normalized / no samples / point / n=...


@dataclass
class RowResult:
    label: str
    old_status: str
    new_status: str
    metrics: list[MetricResult] = field(default_factory=list)
    note: str = ""

    @property
    def regressions(self) -> list[MetricResult]:
        return [m for m in self.metrics if m.verdict == REGRESSION]

    @property
    def failed_now(self) -> bool:
        return self.old_status == "ok" and self.new_status == "failed"


@dataclass
class Comparison:
    old_name: str  # OLD's file name: the side every change is measured from
    new_name: str | None  # NEW's file name; None: variants within OLD's run
    mode: str
    rows: list[RowResult]
    only_old: list[str]
    only_new: list[str]
    notes: list[str]
    default_threshold: float
    tests_interval: int = 0  # gated row x metric tests with bootstrap intervals (m)
    tests_point: int = 0  # gated tests on point values (no samples, or single measurements)
    insufficient: int = 0
    confidence: float = FAMILY_CONFIDENCE  # of each gated interval
    drift: list[str] = field(default_factory=list)
    baseline_label: str = "old"

    @property
    def title(self) -> str:
        """Which side is which, spelled out: the change is NEW relative to OLD."""
        if self.new_name is None:
            return f"variants within {self.old_name} (against {self.baseline_label})"
        return f"OLD {self.old_name} -> NEW {self.new_name} (changes are NEW relative to OLD)"

    @property
    def regressed(self) -> list[RowResult]:
        return [r for r in self.rows if r.regressions or r.failed_now]


def pct(x: float) -> str:
    """A ratio new/old as a signed percent change."""
    if math.isinf(x):
        return "from 0"
    return f"{(x - 1) * 100:+.1f}%" if math.isfinite(x) else "n/a"


def ratio(new: float, old: float) -> float:
    if old == 0:
        return 1.0 if new == 0 else math.inf
    return new / old
