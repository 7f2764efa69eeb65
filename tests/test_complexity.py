"""Power-law fits (exact on synthetic data) and the complexity command on the tiny model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from infer_opt.cli import main
from infer_opt.tools.complexity import fit_power_law

from .tables import flat


def test_exact_quadratic_fit() -> None:
    ns = [16, 32, 64, 128, 256]
    fit = fit_power_law(ns, [3.0 * n**2 for n in ns])
    assert fit.exponent == pytest.approx(2.0, abs=1e-12)
    assert fit.coefficient == pytest.approx(3.0, rel=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.points == 5


def test_linear_plus_constant_fit_is_below_one() -> None:
    ns = [10, 100, 1000]
    fit = fit_power_law(ns, [100 + n for n in ns])  # overhead bends the log-log line
    assert 0.4 < fit.exponent < 0.9 and fit.r2 < 1.0


def test_fit_rejects_bad_points() -> None:
    for ns, ts in (([1], [1.0]), ([2, 2], [1.0, 2.0]), ([1, 2], [0.0, 1.0])):
        with pytest.raises(ValueError):
            fit_power_law(ns, ts)


def test_complexity_command_on_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["complexity", "--model", "tiny-random", "--threads", "1", "--repeats", "1",
                 "--attn-lengths", "32,64", "--gen-lengths", "4,8", "--cached-lengths", "4,8",
                 "--out", str(tmp_path)]) == 0
    out = flat(capsys.readouterr().out)
    for series in ("attention", "generate-no-cache", "generate-kv-cache"):
        assert f"| {series} |" in out
    [csv_path] = tmp_path.glob("*-complexity.csv")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["series"], r["n"]) for r in rows] == [
        ("attention", "32"), ("attention", "64"), ("generate-no-cache", "4"),
        ("generate-no-cache", "8"), ("generate-kv-cache", "4"), ("generate-kv-cache", "8")]
    assert all(float(r["time_ms"]) > 0 for r in rows)
    assert csv_path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_complexity_bad_lengths(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["complexity", "--gen-lengths", "8"]) == 2
    assert "lengths: need at least two distinct integers" in capsys.readouterr().err


def test_complexity_over_depth_on_tiny_model(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["complexity", "--model", "tiny-random", "--threads", "1", "--repeats", "2",
                 "--attn-lengths", "32,64", "--gen-lengths", "4,8", "--cached-lengths", "4,8",
                 "--prefill-lengths", "64,128", "--depths", "32,96,160", "--depth-new-tokens",
                 "4", "--out", str(tmp_path)]) == 0
    out = flat(capsys.readouterr().out)
    for series in ("prefill-vs-length", "decode-step-at-depth", "kv-bytes-at-depth"):
        assert f"| {series} |" in out
    [csv_path] = tmp_path.glob("*-complexity.csv")
    with open(csv_path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["series"] == "kv-bytes-at-depth"]
    # 128 fp32 values per token after depth + 4 tokens (the last new one is never fed: +3 + 1).
    assert [int(r["kv_bytes"]) for r in rows] == [(d + 4) * 128 * 4 for d in (32, 96, 160)]
    # The KV bytes fit exactly: slope 512 bytes per token, interval of width zero.
    assert "| kv-bytes-at-depth |" in out and "| 512 bytes | [512, 512] |" in out


def test_complexity_depth_beyond_context(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["complexity", "--model", "tiny-random", "--depths", "64,500"]) == 2
    assert "depths: 517 tokens" in capsys.readouterr().err


def test_fit_interval_by_hand() -> None:
    from infer_opt.tools.complexity import fit_interval, fit_linear

    # Exact lines: every resample fits the same slope, a zero-width interval.
    assert fit_interval({1: [2.0, 2.0], 2: [4.0, 4.0], 3: [6.0, 6.0]}, linear=True) == (2.0, 2.0)
    assert fit_interval({1: [2.0], 2: [4.0]}, linear=True) is None  # one repeat: no interval
    # Spread at n = 2 (3 or 5): slopes from 1 to 3 over the points (1, 2) and (2, 3..5).
    lo, hi = fit_interval({1: [2.0, 2.0], 2: [3.0, 5.0]}, linear=True)
    assert 1.0 <= lo <= hi <= 3.0 and lo < hi
    f = fit_linear([0, 512, 1024], [10.0, 11.0, 12.0])
    assert (f.slope, f.intercept, f.r2) == (pytest.approx(1 / 512), pytest.approx(10.0), 1.0)
