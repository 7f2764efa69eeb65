"""The sampling rule: when a cell stops timing, and why (pure, no clocks)."""

from __future__ import annotations

import pytest

from infer_opt.core.sampling import SamplingRule


def test_identical_runs_stop_at_min_repeats_on_precision() -> None:
    rule = SamplingRule(min_repeats=5, min_timed_s=0.0, max_repeats=30)
    assert [rule.decide([100.0] * n, timed_s=n * 1.0) for n in range(1, 5)] == [None] * 4
    assert rule.decide([100.0] * 5, timed_s=5.0) == "precision"
    assert rule.precision_pct([100.0] * 5) == 0.0


def test_a_wildly_spread_sequence_stops_at_max_repeats() -> None:
    rule = SamplingRule(min_repeats=5, min_timed_s=0.0, max_repeats=12, max_timed_s=1e9)
    spread = [50.0, 150.0, 70.0, 200.0, 40.0, 120.0, 90.0, 180.0, 60.0, 140.0, 30.0, 160.0]
    decisions = [rule.decide(spread[:n], timed_s=float(n)) for n in range(1, 13)]
    assert decisions == [None] * 11 + ["max_repeats"]


def test_time_limits() -> None:
    rule = SamplingRule(min_repeats=5, min_timed_s=10.0, max_repeats=30, max_timed_s=60.0)
    # Precise after 5 runs, but the minimum duration (like MLPerf's) is not reached yet.
    assert rule.decide([100.0] * 5, timed_s=4.0) is None
    assert rule.decide([100.0] * 5, timed_s=10.0) == "precision"
    # min_repeats is a floor the caps never cut (every row has n >= min_repeats)...
    assert rule.decide([600_000.0], timed_s=600.0) is None
    # ... but the time cap holds below min_timed_s.
    assert rule.decide([50.0, 150.0, 70.0, 200.0, 40.0], timed_s=61.0) == "max_timed_s"


def test_precision_is_the_relative_half_width() -> None:
    rule = SamplingRule(min_repeats=2, min_timed_s=0.0, target_precision_pct=30.0)
    # [100, 140]: resampled medians 100, 120, 140 -> interval [100, 140], half-width 20 = 16.7%
    # of the median 120.
    assert rule.precision_pct([100.0, 140.0]) == pytest.approx(100 * 20 / 120)
    assert rule.decide([100.0, 140.0], timed_s=1.0) == "precision"
    assert SamplingRule(min_repeats=2, target_precision_pct=10.0).decide(
        [100.0, 140.0], timed_s=1.0) is None


def test_bad_rules() -> None:
    with pytest.raises(ValueError, match="min_repeats"):
        SamplingRule(min_repeats=0)
    with pytest.raises(ValueError, match="max_repeats"):
        SamplingRule(min_repeats=5, max_repeats=4)
    with pytest.raises(ValueError, match="target_precision_pct"):
        SamplingRule(target_precision_pct=0.0)
