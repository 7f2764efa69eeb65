import math

import pytest

from infer_opt.core.stats import Stats, percentile


def test_textbook_example() -> None:
    # 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sample variance 32/7.
    s = Stats.of([2, 4, 4, 4, 5, 5, 7, 9])
    assert s.mean == 5.0
    assert s.std == pytest.approx(math.sqrt(32 / 7), rel=1e-12)
    assert s.min == 2 and s.max == 9 and s.count == 8
    # rank = 7 * 0.5 = 3.5 -> between 4 and 5
    assert s.p50 == 4.5
    # rank = 7 * 0.9 = 6.3 -> 7 + 0.3 * (9 - 7)
    assert s.p90 == pytest.approx(7.6, abs=1e-12)
    # rank = 7 * 0.99 = 6.93 -> 7 + 0.93 * 2
    assert s.p99 == pytest.approx(8.86, abs=1e-12)


def test_order_does_not_matter() -> None:
    assert Stats.of([3, 1, 2]) == Stats.of([1, 2, 3])


def test_single_sample() -> None:
    s = Stats.of([7.5])
    assert (s.mean, s.std, s.p50, s.p99, s.min, s.max) == (7.5, 0.0, 7.5, 7.5, 7.5, 7.5)


def test_even_median() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([1, 2, 3, 4], 0) == 1
    assert percentile([1, 2, 3, 4], 100) == 4


def test_matches_numpy_linear() -> None:
    np = pytest.importorskip("numpy")
    values = [0.3, 9.1, 4.4, 2.2, 7.7, 1.0, 5.5]
    s = Stats.of(values)
    assert s.p90 == pytest.approx(float(np.percentile(values, 90)), rel=1e-12)
    assert s.std == pytest.approx(float(np.std(values, ddof=1)), rel=1e-12)


def test_columns_have_units_prefix() -> None:
    cols = Stats.of([1, 2]).columns("ttft_ms")
    assert list(cols) == ["ttft_ms_mean", "ttft_ms_std", "ttft_ms_p50", "ttft_ms_p90",
                          "ttft_ms_p99", "ttft_ms_min", "ttft_ms_max"]


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        Stats.of([])
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_tail_columns_need_enough_samples() -> None:
    nine = Stats.of(range(1, 10)).columns("tpot_ms")
    assert nine["tpot_ms_p90"] == "" and nine["tpot_ms_p99"] == ""
    assert nine["tpot_ms_p50"] == 5 and nine["tpot_ms_max"] == 9 and nine["tpot_ms_min"] == 1
    ten = Stats.of(range(1, 11)).columns("tpot_ms")
    assert ten["tpot_ms_p90"] == pytest.approx(9.1)  # rank 9 * 0.9 = 8.1 -> 9 + 0.1
    assert ten["tpot_ms_p99"] == ""
    hundred = Stats.of(range(100)).columns("itl_ms")
    assert hundred["itl_ms_p99"] == pytest.approx(98.01)  # rank 99 * 0.99 = 98.01


def test_bootstrap_median_small_cases() -> None:
    from infer_opt.core.stats import bootstrap_median

    assert bootstrap_median([7.0]) == (7.0, None, None)  # one value: no interval
    assert bootstrap_median([3.0] * 5) == (3.0, 3.0, 3.0)  # zero width, equal to the point
    # [1, 3]: resampled medians are 1, 2, 3 with probabilities 1/4, 1/2, 1/4, so the 2.5% and
    # 97.5% quantiles are the extremes.
    assert bootstrap_median([1.0, 3.0]) == (2.0, 1.0, 3.0)
    # [1, 2, 3]: a resampled median is 1 with probability 7/27 (two or three draws of 1),
    # so a central 40% interval (30%..70% quantiles) is [2, 2].
    assert bootstrap_median([1.0, 2.0, 3.0], confidence=0.4) == (2.0, 2.0, 2.0)
    a = bootstrap_median([1.0, 5.0, 2.0, 8.0, 3.0], seed=3)
    assert a == bootstrap_median([1.0, 5.0, 2.0, 8.0, 3.0], seed=3)  # seeded
    with pytest.raises(ValueError):
        bootstrap_median([])


def test_paired_ratio_pairs_by_round() -> None:
    from infer_opt.core.stats import bootstrap_paired_ratio, paired_ratios

    # Round 2 exists on one side only; rounds are matched by index, not by position.
    old, old_rounds = [10.0, 20.0, 40.0, 5.0], [0, 1, 2, 3]
    new, new_rounds = [22.0, 11.0, 5.5], [1, 0, 3]
    assert paired_ratios(old, old_rounds, new, new_rounds) == [1.1, 1.1, 1.1]
    assert bootstrap_paired_ratio(old, old_rounds, new, new_rounds) == pytest.approx(
        (1.1, 1.1, 1.1))
    assert bootstrap_paired_ratio([10.0], [0], [12.0], [0]) == (pytest.approx(1.2), None, None)
    with pytest.raises(ValueError, match="no round in common"):
        bootstrap_paired_ratio([1.0], [0], [1.0], [1])
    with pytest.raises(ValueError, match="appears twice"):
        paired_ratios([1.0, 2.0], [0, 0], [1.0], [0])
