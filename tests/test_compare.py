"""`infer-opt compare` on synthetic runs: the gate's logic, the join, and bad input."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from infer_opt.cli import main
from infer_opt.results.compare import (bootstrap_ratio, compare_runs, direction, parse_thresholds,
                               read_run)
from infer_opt.core.errors import UserError
from infer_opt.core.schema import COLUMNS, empty_row
from infer_opt.core.stats import Stats


def fake_cell(index: int, variant: str, step_ms: float, seed: int, bs: int = 1,
              repeats: int = 6, new: int = 16, jitter: float = 0.03) -> tuple[dict, dict]:
    """A row and its samples as static_batch.py writes them, from seeded noisy step times."""
    rng = random.Random(seed)
    itl = [[step_ms * (1 + rng.gauss(0, jitter)) for _ in range(new - 1)] for _ in range(repeats)]
    ttft = [4 * step_ms * (1 + rng.gauss(0, jitter)) for _ in range(repeats)]
    e2e = [t + sum(run) for t, run in zip(ttft, itl)]
    row = empty_row()
    row.update(run_id="r", cell_index=index, suite="s", model="tiny-random", variant=variant,
               engine="torch", device="cpu", workload="static-batch", batch_size=bs,
               prompt_tokens=8, new_tokens=new, timed_runs=repeats, warmup_runs=1, status="ok",
               peak_rss_mb=300.0, weight_mb=10.0)
    row.update(Stats.of(ttft).columns("ttft_ms"))
    row.update(Stats.of(e2e).columns("e2e_ms"))
    row.update(Stats.of([x for r in itl for x in r]).columns("itl_ms"))
    row.update(Stats.of([sum(r) / len(r) for r in itl]).columns("tpot_ms"))
    row["decode_tokens_per_s"] = Stats.of([bs * len(r) / (sum(r) / 1e3) for r in itl]).p50
    row["output_tokens_per_s"] = Stats.of([bs * new / (v / 1e3) for v in e2e]).p50
    samples = {"run_id": "r", "cell_index": index, "variant": variant,
               "workload": {"kind": "static-batch", "batch_size": bs, "prompt_tokens": 8,
                            "new_tokens": new, "repeats": repeats, "warmup_runs": 1,
                            "warmup_new_tokens": 0},
               "ttft_ms": ttft, "e2e_ms": e2e, "itl_ms": itl}
    return row, samples


def write_run(path: Path, cells: list[tuple[dict, dict]], with_samples: bool = True) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for row, _ in cells:
            w.writerow(row)
    if with_samples:
        path.with_name(path.stem + ".samples.jsonl").write_text(
            "".join(json.dumps(s) + "\n" for _, s in cells))
    return path


def two_variants(tmp: Path, name: str, slow: float, seed: int, samples: bool = True) -> Path:
    cells = [fake_cell(0, "kv-cache", 10.0, seed), fake_cell(1, "kv-cache+sdpa", 8.0 * slow,
                                                            seed + 1)]
    return write_run(tmp / f"{name}.csv", cells, samples)


def test_directions() -> None:
    assert direction("tpot_ms_p50") == "lower"
    assert direction("decode_tokens_per_s") == "higher"
    assert direction("peak_rss_mb") == "lower"
    assert direction("kl_mean") == "lower"
    assert direction("top1_agreement_pct") == "higher"
    assert direction("itl_ms_std") is None  # spread: not gated
    assert direction("variant") is None and direction("timestamp_utc") is None


def test_thresholds_parse() -> None:
    assert parse_thresholds([]) == (0.10, {})
    assert parse_thresholds(["5%", "tpot_ms_p50=20%", "*_p99=0.5"]) == (
        0.05, {"tpot_ms_p50": 0.20, "*_p99": 0.005})
    with pytest.raises(UserError, match="--fail-above"):
        parse_thresholds(["ten"])


def test_bootstrap_is_seeded_and_brackets_the_ratio() -> None:
    old = [[10.0 + i % 3] for i in range(9)]
    new = [[12.0 + i % 3] for i in range(9)]
    a = bootstrap_ratio(old, new, "p50", seed=1)
    assert a == bootstrap_ratio(old, new, "p50", seed=1)
    point, lo, hi = a
    assert point == pytest.approx(13 / 11)
    assert lo <= point <= hi and lo > 1.0


def test_same_run_is_not_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = two_variants(tmp_path, "a", 1.0, seed=1)
    b = two_variants(tmp_path, "b", 1.0, seed=11)  # same distributions, other noise
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "no regression in 2 matched rows" in out


def test_slowed_variant_is_flagged_and_named(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    a = two_variants(tmp_path, "a", 1.0, seed=1)
    b = two_variants(tmp_path, "b", 1.15, seed=11)
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    tail = out.split("REGRESSION in", 1)[1]
    assert "1 of 2 rows" in tail
    assert "kv-cache+sdpa static-batch bs=1 prompt=8 new=16: tpot_ms_p50 +1" in tail
    assert "kv-cache static-batch" not in tail
    # A 15% slowdown passes a 20% gate.
    assert main(["compare", str(a), str(b), "--fail-above", "20%"]) == 0


def test_large_but_noisy_difference_is_within_noise(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a.csv", [fake_cell(0, "v", 10.0, 1, repeats=3, jitter=0.4)])
    b = write_run(tmp_path / "b.csv", [fake_cell(0, "v", 11.5, 2, repeats=3, jitter=0.4)])
    cmp = compare_runs(read_run(a), read_run(b))
    verdicts = {m.metric: m for m in cmp.rows[0].metrics}
    m = verdicts["ttft_ms_p50"]
    assert m.ci is not None and m.ci[0] < 1.0 < m.ci[1]
    assert m.verdict in ("within noise", "below threshold", "improvement")


def test_missing_samples_falls_back_and_says_so(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    a = two_variants(tmp_path, "a", 1.0, seed=1, samples=False)
    b = two_variants(tmp_path, "b", 1.15, seed=11)
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "note: no samples file a.samples.jsonl: a.csv is compared on summary statistics only" in out
    assert "no samples" in out


def test_rows_in_one_file_only_are_listed(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a.csv", [fake_cell(0, "kv-cache", 10.0, 1),
                                       fake_cell(1, "bf16", 10.0, 2)])
    b = write_run(tmp_path / "b.csv", [fake_cell(0, "kv-cache", 10.0, 3),
                                       fake_cell(1, "kv-cache", 10.0, 4, bs=4)])
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "only in old: bf16 static-batch bs=1 prompt=8 new=16" in out
    assert "only in new (no match): kv-cache static-batch bs=4 prompt=8 new=16" in out


def test_failed_row_is_a_regression(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a.csv", [fake_cell(0, "kv-cache", 10.0, 1)])
    row, s = fake_cell(0, "kv-cache", 10.0, 2)
    row.update(status="failed", reason="RuntimeError: boom")
    b = write_run(tmp_path / "b.csv", [(row, s)])
    cmp = compare_runs(read_run(a), read_run(b))
    assert [r.label for r in cmp.regressed] == ["kv-cache static-batch bs=1 prompt=8 new=16"]


def test_fidelity_columns_are_compared_generically(tmp_path: Path) -> None:
    def with_kl(path: Path, kl: float) -> Path:
        row, s = fake_cell(0, "int8", 10.0, 1)
        cols = COLUMNS + ["kl_mean", "top1_agreement_pct"]
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerow({**row, "kl_mean": kl, "top1_agreement_pct": 99.0})
        path.with_name(path.stem + ".samples.jsonl").write_text(json.dumps(s) + "\n")
        return path

    cmp = compare_runs(read_run(with_kl(tmp_path / "a.csv", 0.010)),
                       read_run(with_kl(tmp_path / "b.csv", 0.020)))
    kl = next(m for m in cmp.rows[0].metrics if m.metric == "kl_mean")
    assert kl.verdict == "regression" and kl.ci is None
    agree = next(m for m in cmp.rows[0].metrics if m.metric == "top1_agreement_pct")
    assert agree.better == "higher" and agree.verdict == "below threshold"


def test_baseline_variant_inside_one_run(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "r.csv", [fake_cell(0, "kv-cache", 10.0, 1),
                                         fake_cell(1, "kv-cache+test-slow", 11.5, 2),
                                         fake_cell(2, "kv-cache+sdpa", 10.0, 3)])
    assert main(["compare", str(run), "--baseline-variant", "kv-cache"]) == 1
    out = capsys.readouterr().out
    tail = out.split("REGRESSION in", 1)[1]
    assert "kv-cache+test-slow static-batch" in tail and "kv-cache+sdpa" not in tail
    with pytest.raises(UserError, match="'nope' is not in r.csv; variants there: kv-cache"):
        from infer_opt.results.compare import compare_to_variant
        compare_to_variant(read_run(run), "nope")


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    (",".join(COLUMNS) + "\n", "has a header but no rows"),
    ("a,b\n1,2\n", "is not an infer-opt results CSV (no column schema_version, variant, status, model)"),
    (",".join(COLUMNS) + "\n" + ",".join(["1"] * 5) + "\n", "line 2: 5 fields where the header has"),
    (",".join(COLUMNS) + "\n" + ",".join(["7"] + ["x"] * (len(COLUMNS) - 1)) + "\n",
     "has schema version '7'; this infer-opt reads version 1"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      content: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    good = write_run(tmp_path / "good.csv", [fake_cell(0, "v", 10.0, 1)])
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and err.startswith("infer-opt: error: csv:")


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_run(tmp_path / "good.csv", [fake_cell(0, "v", 10.0, 1)])
    assert main(["compare", str(good)]) == 2
    assert main(["compare", str(good), str(tmp_path / "none.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["compare", str(good), str(good), "--fail-above", "x=abc"]) == 2


def test_ragged_samples_do_not_break_the_bootstrap() -> None:
    point, lo, hi = bootstrap_ratio([[1.0, 2.0], [3.0]], [[2.0, 4.0, 6.0]], "p50", seed=0)
    assert point == pytest.approx(2.0) and lo <= point <= hi


def test_slowed_run_against_a_normal_run_by_variant(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    normal = write_run(tmp_path / "normal.csv", [fake_cell(0, "kv-cache", 10.0, 1)])
    slowed = write_run(tmp_path / "slowed.csv", [fake_cell(0, "kv-cache+test-slow", 11.5, 2)])
    assert main(["compare", str(normal), str(slowed)]) == 2  # nothing matches: not a pass
    assert "no row of slowed.csv matches a row of normal.csv" in capsys.readouterr().err
    assert main(["compare", str(normal), str(slowed), "--baseline-variant", "kv-cache"]) == 1
    tail = capsys.readouterr().out.split("REGRESSION in 1 of 1 rows:", 1)[1]
    assert "kv-cache+test-slow static-batch bs=1 prompt=8 new=16: tpot_ms_p50 +" in tail


def test_gate_needs_the_whole_interval_beyond_the_threshold() -> None:
    from infer_opt.results.compare import compare_metric

    # Hand-built: old TPOT 10 ms in every run; new runs at 10.5, 11.5, 12.5 ms (no noise
    # inside a run). Point ratio (median) 1.15; resampled medians of 3 runs lie in 10.5..12.5,
    # so the interval starts at +5%: worse than 10% by its point, not clearly.
    old = {"workload": "static-batch", "tpot_ms_p50": "10.0", "status": "ok"}
    new = {"workload": "static-batch", "tpot_ms_p50": "11.5", "status": "ok"}
    old_s = {"itl_ms": [[10.0, 10.0]] * 3}
    new_s = {"itl_ms": [[10.5, 10.5], [11.5, 11.5], [12.5, 12.5]]}
    m = compare_metric("tpot_ms_p50", old, new, old_s, new_s, 0.10, 500, 0)
    assert m is not None and m.ratio == pytest.approx(1.15)
    assert m.ci is not None and m.ci[0] == pytest.approx(1.05) and m.ci[1] == pytest.approx(1.25)
    assert m.verdict == "within noise"
    # The same runs 20% slower each: the whole interval (+15..+35%) clears the 10% gate.
    new_s = {"itl_ms": [[11.5, 11.5], [12.5, 12.5], [13.5, 13.5]]}
    new = dict(new, tpot_ms_p50="12.5")
    m = compare_metric("tpot_ms_p50", old, new, old_s, new_s, 0.10, 500, 0)
    assert m is not None and m.verdict == "regression"


def test_common_shift_is_the_median_over_rows(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from infer_opt.results.compare import common_shift

    a = write_run(tmp_path / "a.csv", [fake_cell(i, f"v{i}", 10.0, i, jitter=0.0)
                                       for i in range(3)])
    # New TPOT per row: +2%, +4%, +30% (one row really moved): the median is +4%.
    b = write_run(tmp_path / "b.csv", [fake_cell(i, f"v{i}", 10.0 * f, 10 + i, jitter=0.0)
                                       for i, f in enumerate((1.02, 1.04, 1.30))])
    cmp = compare_runs(read_run(a), read_run(b))
    assert common_shift(cmp.rows) == ("tpot_ms_p50 changed by a median of +4.0% over 3 rows (a "
                                      "shift shared by every row points at the machine, not at "
                                      "one variant)")
    assert main(["compare", str(a), str(b)]) == 1  # the +30% row is still a regression
    out = capsys.readouterr().out
    assert "note: tpot_ms_p50 changed by a median of +4.0% over 3 rows" in out
    assert "v2 static-batch bs=1 prompt=8 new=16: tpot_ms_p50 +30.0%" in out
