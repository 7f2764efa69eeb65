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
