"""`infer-opt compare` on synthetic runs: the gate, the joins and modes, and bad input."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest

from infer_opt.cli import main
from infer_opt.core.errors import UserError
from infer_opt.core.stats import Stats
from infer_opt.format.columns import COLUMNS, direction, empty_row, floor
from infer_opt.format.io import read_results
from infer_opt.results.compare import (
    INSUFFICIENT,
    REGRESSION,
    MetricResult,
    compare,
    compare_runs,
    judge,
    parse_maps,
    parse_thresholds,
)

from .tables import flat


def fake_cell(index: int, variant: str, step_ms: float, seed: int, bs: int = 1,
              repeats: int = 6, new: int = 16, jitter: float = 0.03,
              drift: list[float] | None = None, rounds: list[int] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A row and its samples line (schema 2) from seeded noisy step times. drift[r] multiplies
    every time of round r (the machine in that round); rounds default to 0..repeats-1."""
    rng = random.Random(seed)
    drift = drift or [1.0] * repeats
    itl = [[step_ms * drift[r] * (1 + rng.gauss(0, jitter)) for _ in range(new - 1)]
           for r in range(repeats)]
    ttft = [4 * step_ms * drift[r] * (1 + rng.gauss(0, jitter)) for r in range(repeats)]
    e2e = [t + sum(run) for t, run in zip(ttft, itl)]
    runs = {"round": rounds or list(range(repeats)), "ttft_ms": ttft, "e2e_ms": e2e,
            "tpot_ms": [sum(r) / len(r) for r in itl],
            "decode_tokens_per_s": [bs * len(r) / (sum(r) / 1e3) for r in itl],
            "output_tokens_per_s": [bs * new / (v / 1e3) for v in e2e],
            "prefill_tokens_per_s": [bs * 8 / (v / 1e3) for v in ttft],
            "requests_per_s": [bs / (v / 1e3) for v in e2e]}
    row = empty_row()
    row.update(run_id="r", cell_index=index, suite="s", model="tiny-random", variant=variant,
               engine="torch", device="cpu", workload="static-batch", batch_size=bs,
               prompt_tokens=8, new_tokens=new, warmup_runs=1, status="ok",
               peak_rss_mb=300.0, weight_mb=10.0, timed_runs=repeats)
    for metric in ("ttft_ms", "e2e_ms", "tpot_ms"):
        row.update(Stats.of(runs[metric]).columns(metric))
    row.update(Stats.of([x for r in itl for x in r]).columns("itl_ms"))
    for metric in ("decode_tokens_per_s", "output_tokens_per_s", "prefill_tokens_per_s",
                   "requests_per_s"):
        row[metric] = Stats.of(runs[metric]).p50
    samples = {"run_id": "r", "cell_index": index, "variant": variant,
               "workload": {"kind": "static-batch", "batch_size": bs, "prompt_tokens": 8,
                            "new_tokens": new, "repeats": repeats, "warmup_runs": 1,
                            "warmup_new_tokens": 0},
               "runs": runs, "itl_ms": itl}
    return row, samples


def write_run(path: Path, cells: list[tuple[dict[str, Any], dict[str, Any]]],
              with_samples: bool = True, extra: list[str] | None = None) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS + (extra or []))
        w.writeheader()
        for row, _ in cells:
            w.writerow(row)
    if with_samples:
        path.with_name(path.stem + ".samples.jsonl").write_text(
            "".join(json.dumps(s) + "\n" for _, s in cells))
    return path


def two_variants(tmp: Path, name: str, slow: float, seed: int, samples: bool = True,
                 machine: float = 1.0) -> Path:
    cells = [fake_cell(0, "kv-cache", 10.0 * machine, seed),
             fake_cell(1, "kv-cache+sdpa", 8.0 * slow * machine, seed + 1)]
    return write_run(tmp / f"{name}.csv", cells, samples)


def metric(cmp: Any, label_start: str, name: str) -> MetricResult:
    row = next(r for r in cmp.rows if r.label.startswith(label_start))
    return next(m for m in row.metrics if m.metric == name)


# --- directions, floors, arguments -----------------------------------------------------------

def test_directions_live_in_the_schema() -> None:
    assert direction("tpot_ms_p50") == "lower"
    assert direction("decode_tokens_per_s") == "higher"
    assert direction("peak_rss_mb") == "lower"
    assert direction("kl_mean") == direction("kl_max") == "lower"
    assert direction("top1_agreement_pct") == "higher"
    assert direction("greedy_match_tokens") == "higher"
    assert direction("logits_nonfinite_count") == "lower"
    assert direction("itl_ms_std") is None  # spread: not gated
    for described in ("variant", "timestamp_utc", "arrival_rate_per_s", "max_wait_ms",
                      "timed_s", "tpot_ms_p50_ci_low", "decode_tokens_per_s_ci_high",
                      "other_cpu_pct", "machine_busy", "ttft_slo_ms", "duration_s"):
        assert direction(described) is None, described


def test_floors_table() -> None:
    assert floor("kl_mean") == floor("kl_max") == 1e-6
    assert floor("queue_ms_p50") == 1.0
    assert floor("top1_agreement_pct") == 1.0
    assert floor("tpot_ms_p50") == 0.0


def test_thresholds_and_maps_parse() -> None:
    assert parse_thresholds([]) == (0.10, {})
    assert parse_thresholds(["5%", "tpot_ms_p50=20%", "*_p99=0.5"]) == (
        0.05, {"tpot_ms_p50": 0.20, "*_p99": 0.005})
    with pytest.raises(UserError, match="--fail-above"):
        parse_thresholds(["ten"])
    assert parse_maps(["kv-cache+p=kv-cache", " a = b "]) == {"kv-cache+p": "kv-cache", "a": "b"}
    for bad in ("nothing", "=x", "x=", ):
        with pytest.raises(UserError, match="--map"):
            parse_maps([bad])
    with pytest.raises(UserError, match="--map"):
        parse_maps(["a=b", "a=c"])


def test_judge_rules() -> None:
    def m(old: float, new: float, ci: tuple[float, float] | None, name: str = "tpot_ms_p50"
          ) -> str:
        return judge(MetricResult(name, old, new, new / old, ci, "lower", 0.10, ""))

    assert m(10, 12, (1.15, 1.25)) == "regression"
    assert m(10, 12, (1.05, 1.35)) == "within noise"
    assert m(10, 8, (0.75, 0.85)) == "improvement"
    assert m(10, 10.5, (0.9, 1.2)) == "below threshold"
    assert m(10, 12, None) == "regression"  # no samples: the point ratio is all there is
    # Queue times of an idle server: +150% of 0.02 ms is below the 1 ms floor.
    assert m(0.02, 0.05, (2.0, 3.0), "queue_ms_p50") == "below floor"
    assert m(2.0, 5.0, (2.0, 3.0), "queue_ms_p50") == "regression"


# --- two runs --------------------------------------------------------------------------------

def test_same_distributions_are_not_a_regression(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a = two_variants(tmp_path, "a", 1.0, seed=1)
    b = two_variants(tmp_path, "b", 1.0, seed=11)  # same distributions, other noise
    assert main(["compare", str(a), str(b)]) == 0
    out = flat(capsys.readouterr().out)
    assert "timed metrics normalized by kv-cache" in out
    assert "no regression in 2 matched rows" in out


def test_slowed_variant_is_flagged_and_named(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    a = two_variants(tmp_path, "a", 1.0, seed=1)
    b = two_variants(tmp_path, "b", 1.15, seed=11)
    assert main(["compare", str(a), str(b)]) == 1
    out = flat(capsys.readouterr().out)
    tail = out.split("REGRESSION in", 1)[1]
    assert "1 of 2 rows" in tail
    assert "kv-cache+sdpa static-batch bs=1 prompt=8 new=16: tpot_ms_p50 +1" in tail
    assert "kv-cache static-batch" not in tail
    # A 15% slowdown passes a 20% gate.
    assert main(["compare", str(a), str(b), "--fail-above", "20%"]) == 0


def test_a_uniformly_slower_machine_is_drift_not_regression(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = two_variants(tmp_path, "a", 1.0, seed=1)
    b = two_variants(tmp_path, "b", 1.0, seed=11, machine=1.3)  # every row 30% slower
    assert main(["compare", str(a), str(b)]) == 0
    out = flat(capsys.readouterr().out)
    assert "drift: kv-cache's own tpot_ms_p50 changed +3" in out  # about +30%
    cmp = compare_runs(read_results(a), read_results(b))
    tpot = metric(cmp, "kv-cache+sdpa", "tpot_ms_p50")
    assert tpot.ratio == pytest.approx(1.0, abs=0.05) and "normalized by kv-cache" in tpot.method
    assert metric(cmp, "kv-cache static", "tpot_ms_p50").verdict == "reference (drift)"
    # --absolute: raw ratios, so both rows regress; the drift line is still there.
    assert main(["compare", str(a), str(b), "--absolute"]) == 1
    out = flat(capsys.readouterr().out)
    assert "REGRESSION in 2 of 2 rows" in out
    assert "drift: kv-cache's own tpot_ms_p50 changed +3" in out
    assert "included in every absolute change above" in out


def test_reference_variant_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = two_variants(tmp_path, "a", 1.0, seed=1)
    b = two_variants(tmp_path, "b", 1.0, seed=11, machine=1.3)
    assert main(["compare", str(a), str(b), "--reference-variant", "kv-cache+sdpa"]) == 0
    assert "normalized by kv-cache+sdpa" in flat(capsys.readouterr().out)
    assert main(["compare", str(a), str(b), "--reference-variant", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "infer-opt: error: --reference-variant: 'bf16' has no ok row in both" in err


def test_without_a_reference_the_common_shift_is_the_drift(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a.csv", [fake_cell(i, f"v{i}", 10.0, i, jitter=0.0)
                                       for i in range(3)])
    # New TPOT per row: +2%, +4%, +30% (one row really moved): the median is +4%.
    b = write_run(tmp_path / "b.csv", [fake_cell(i, f"v{i}", 10.0 * f, 10 + i, jitter=0.0)
                                       for i, f in enumerate((1.02, 1.04, 1.30))])
    assert main(["compare", str(a), str(b)]) == 1  # the +30% row is a regression
    out = flat(capsys.readouterr().out)
    assert "absolute ratios (no reference variant (baseline, kv-cache" in out
    assert "tpot_ms_p50 changed by a median of +4.0% over 3 rows" in out
    assert "v2 static-batch bs=1 prompt=8 new=16: tpot_ms_p50 +30.0%" in out


def test_insufficient_samples_is_never_a_regression(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # repeats = 1 used to give a zero-width interval printed as REGRESSION +2861%..+2861%.
    a = write_run(tmp_path / "a.csv", [fake_cell(0, "v", 10.0, 1, repeats=1)])
    b = write_run(tmp_path / "b.csv", [fake_cell(0, "v", 296.1, 2, repeats=1)])
    assert main(["compare", str(a), str(b)]) == 0
    out = flat(capsys.readouterr().out)
    assert "REGRESSION" not in out
    assert "| v static-batch bs=1 prompt=8 new=16 | tpot_ms_p50 |" in out
    assert "n=1 < 3" in out and "insufficient samples" in out
    assert "with insufficient samples (fewer than 3 timed runs per side): no verdict" in out
    cmp = compare_runs(read_results(a), read_results(b))
    assert metric(cmp, "v", "tpot_ms_p50").verdict == INSUFFICIENT
    assert metric(cmp, "v", "weight_mb").verdict == "below threshold"  # memory is still judged
    # Two runs per side is still too few; three is enough.
    a = write_run(tmp_path / "a.csv", [fake_cell(0, "v", 10.0, 1, repeats=2)])
    b = write_run(tmp_path / "b.csv", [fake_cell(0, "v", 20.0, 2, repeats=2)])
    tpot = metric(compare_runs(read_results(a), read_results(b)), "v", "tpot_ms_p50")
    assert tpot.verdict == INSUFFICIENT
    a = write_run(tmp_path / "a.csv", [fake_cell(0, "v", 10.0, 1, repeats=3)])
    b = write_run(tmp_path / "b.csv", [fake_cell(0, "v", 20.0, 2, repeats=3)])
    assert metric(compare_runs(read_results(a), read_results(b)), "v", "tpot_ms_p50").verdict == REGRESSION


def test_missing_samples_is_refused_unless_point_ratios(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    a = two_variants(tmp_path, "a", 1.0, seed=1, samples=False)
    b = two_variants(tmp_path, "b", 1.15, seed=11)
    assert main(["compare", str(a), str(b)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "a.samples.jsonl is missing" in captured.err
    # Asked for explicitly: point values, and the output says so.
    assert main(["compare", str(a), str(b), "--point-ratios"]) == 1
    out = flat(capsys.readouterr().out)
    assert "a.samples.jsonl is missing: a.csv has summary statistics only" in out
    assert "| no samples; normalized by kv-cache" in out


def test_samples_that_do_not_reproduce_the_row_are_not_used(tmp_path: Path) -> None:
    row, s = fake_cell(0, "v", 10.0, 1)
    s["runs"]["tpot_ms"] = [x * 2 for x in s["runs"]["tpot_ms"]]  # not what the row says
    a = write_run(tmp_path / "a.csv", [(row, s)])
    b = write_run(tmp_path / "b.csv", [fake_cell(0, "v", 10.0, 2)])
    with pytest.raises(UserError, match="samples of v static-batch .* do not reproduce"):
        compare_runs(read_results(a), read_results(b))
    cmp = compare_runs(read_results(a), read_results(b), point_ratios=True)
    assert any("do not reproduce tpot_ms_p50" in n for n in cmp.notes)
    tpot = metric(cmp, "v", "tpot_ms_p50")
    assert tpot.ci is None and tpot.method.startswith("no samples")


def test_rows_in_one_file_only_are_listed(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a.csv", [fake_cell(0, "kv-cache", 10.0, 1),
                                       fake_cell(1, "bf16", 10.0, 2)])
    b = write_run(tmp_path / "b.csv", [fake_cell(0, "kv-cache", 10.0, 3),
                                       fake_cell(1, "kv-cache", 10.0, 4, bs=4)])
    assert main(["compare", str(a), str(b)]) == 0
    out = flat(capsys.readouterr().out)
    assert "only in old: bf16 static-batch bs=1 prompt=8 new=16" in out
    assert "only in new (no match): kv-cache static-batch bs=4 prompt=8 new=16" in out


def test_failed_row_is_a_regression(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a.csv", [fake_cell(0, "kv-cache", 10.0, 1)])
    row, s = fake_cell(0, "kv-cache", 10.0, 2)
    row.update(status="failed", reason="RuntimeError: boom")
    b = write_run(tmp_path / "b.csv", [(row, s)])
    cmp = compare_runs(read_results(a), read_results(b))
    assert [r.label for r in cmp.regressed] == ["kv-cache static-batch bs=1 prompt=8 new=16"]


def test_fidelity_and_memory_are_single_measurements(tmp_path: Path) -> None:
    def with_kl(path: Path, kl: float, agree: float) -> Path:
        row, s = fake_cell(0, "int8", 10.0, 1)
        row.update(kl_mean=kl, top1_agreement_pct=agree)
        return write_run(path, [(row, s)])

    cmp = compare_runs(read_results(with_kl(tmp_path / "a.csv", 0.010, 99.0)),
                       read_results(with_kl(tmp_path / "b.csv", 0.020, 98.5)))
    kl = metric(cmp, "int8", "kl_mean")
    assert kl.verdict == "regression" and kl.ci is None and kl.method == "single measurement"
    agree = metric(cmp, "int8", "top1_agreement_pct")
    assert agree.better == "higher" and agree.verdict == "below threshold"
    # KL 1e-9 -> 5e-7 is x500 and the same answers: below the 1e-6 floor.
    cmp = compare_runs(read_results(with_kl(tmp_path / "a.csv", 1e-9, 100.0)),
                       read_results(with_kl(tmp_path / "b.csv", 5e-7, 100.0)))
    assert metric(cmp, "int8", "kl_mean").verdict == "below floor"


# --- within one run: paired rounds, --baseline-variant, --map --------------------------------

ROUND_DRIFT = [1.0, 1.25, 0.85, 1.2, 0.8, 1.1]  # the machine in each round: +-25%


def test_paired_rounds_cancel_drift_between_rounds(tmp_path: Path) -> None:
    # Both variants saw the same machine in each round; the new one is 15% slower throughout.
    base = fake_cell(0, "kv-cache", 10.0, 1, jitter=0.005, drift=ROUND_DRIFT)
    slow = fake_cell(1, "kv-cache+test-slow", 11.5, 2, jitter=0.005, drift=ROUND_DRIFT)
    run = read_results(write_run(tmp_path / "r.csv", [base, slow]))
    cmp = compare(run, baseline="kv-cache")
    tpot = metric(cmp, "kv-cache+test-slow", "tpot_ms_p50")
    assert tpot.method == "paired, 6 rounds"
    assert tpot.ratio == pytest.approx(1.15, abs=0.01) and tpot.verdict == REGRESSION
    # The same runs with rounds that do not match: unpaired, and the drift hides the change.
    moved = fake_cell(1, "kv-cache+test-slow", 11.5, 2, jitter=0.005, drift=ROUND_DRIFT,
                      rounds=[10, 11, 12, 13, 14, 15])
    run = read_results(write_run(tmp_path / "u.csv", [base, moved]))
    tpot = metric(compare(run, baseline="kv-cache"), "kv-cache+test-slow", "tpot_ms_p50")
    assert tpot.method == "unpaired, 6/6 runs" and tpot.verdict == "within noise"


def test_baseline_variant_inside_one_run(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "r.csv", [fake_cell(0, "kv-cache", 10.0, 1),
                                         fake_cell(1, "kv-cache+test-slow", 11.5, 2),
                                         fake_cell(2, "kv-cache+sdpa", 10.0, 3)])
    assert main(["compare", str(run), "--baseline-variant", "kv-cache"]) == 1
    out = flat(capsys.readouterr().out)
    assert "mode: within one run (every variant against kv-cache)" in out
    tail = out.split("REGRESSION in", 1)[1]
    assert "kv-cache+test-slow static-batch" in tail and "kv-cache+sdpa" not in tail
    assert main(["compare", str(run), "--baseline-variant", "nope"]) == 2
    assert "'nope' is not in r.csv; variants there: kv-cache" in capsys.readouterr().err


def test_map_compares_a_stack_with_its_base(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cells = [fake_cell(0, "kv-cache", 10.0, 1), fake_cell(1, "kv-cache+myplugin", 11.5, 2),
             fake_cell(2, "bf16", 5.0, 3), fake_cell(3, "bf16+myplugin", 5.0, 4)]
    run = write_run(tmp_path / "r.csv", cells)
    assert main(["compare", str(run), "--map", "kv-cache+myplugin=kv-cache",
                 "--map", "bf16+myplugin=bf16"]) == 1
    out = flat(capsys.readouterr().out)
    assert "REGRESSION in 1 of 2 rows" in out
    assert "kv-cache+myplugin static-batch bs=1 prompt=8 new=16: tpot_ms_p50 +1" in out
    # Two files: NEW's kv-cache+myplugin rows against OLD's kv-cache rows, normalized by
    # kv-cache (in both runs), so NEW's machine being 30% slower is divided out.
    old = write_run(tmp_path / "old.csv", [fake_cell(0, "kv-cache", 10.0, 5)])
    new = write_run(tmp_path / "new.csv", [fake_cell(0, "kv-cache", 13.0, 6),
                                           fake_cell(1, "kv-cache+myplugin", 13.0 * 1.15, 7)])
    cmp = compare(read_results(old), read_results(new), maps=["kv-cache+myplugin=kv-cache"])
    tpot = metric(cmp, "kv-cache+myplugin", "tpot_ms_p50")
    assert "normalized by kv-cache" in tpot.method and tpot.verdict == REGRESSION
    assert tpot.ratio == pytest.approx(1.15, abs=0.03)
    assert main(["compare", str(old), str(new), "--map", "nope=kv-cache"]) == 2
    assert "--map: 'nope' is not a variant of new.csv" in capsys.readouterr().err


def test_one_file_needs_a_baseline_or_map(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    good = write_run(tmp_path / "good.csv", [fake_cell(0, "v", 10.0, 1)])
    assert main(["compare", str(good)]) == 2
    assert "give --baseline-variant VARIANT or --map NEW=OLD" in capsys.readouterr().err
    assert main(["compare", str(good), "--map", "v=v", "--absolute"]) == 2
    assert "--absolute: normalizing applies across two runs" in capsys.readouterr().err


# --- online rows: resampled per request --------------------------------------------------------

def online_cell(index: int, ttft_ms: list[float], runs: int = 3
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Requests served over `runs` timed runs (request i in run i % runs)."""
    row = empty_row()
    row.update(run_id="r", cell_index=index, suite="s", model="m", variant="kv-cache",
               engine="torch", device="cpu", workload="online", prompt_tokens=8,
               new_tokens=4, status="ok", policy="continuous", arrival="poisson",
               arrival_rate_per_s=2.0, num_requests=len(ttft_ms), timed_runs=runs)
    row.update(Stats.of(ttft_ms).columns("ttft_ms"))
    reqs = [{"round": i % runs, "queue_ms": 0.0, "ttft_ms": t, "tpot_ms": None, "e2e_ms": t,
             "itl_ms": []} for i, t in enumerate(ttft_ms)]
    return row, {"run_id": "r", "cell_index": index, "variant": "kv-cache",
                 "workload": {"kind": "online", "policy": "continuous"}, "requests": reqs}


def test_online_rows_are_resampled_per_request(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a.csv", [online_cell(0, [10.0, 11.0, 12.0, 10.5, 11.5, 10.8])])
    b = write_run(tmp_path / "b.csv", [online_cell(0, [20.0, 22.0, 24.0, 21.0, 23.0, 21.6])])
    cmp = compare_runs(read_results(a), read_results(b), absolute=True)
    ttft = metric(cmp, "kv-cache online", "ttft_ms_p50")
    assert ttft.method == "unpaired, 6/6 requests in 3/3 runs"
    assert ttft.ratio == pytest.approx(2.0) and ttft.verdict == REGRESSION
    # Many requests but two runs: requests of one run share its batches and machine state,
    # so two runs are too few for a verdict however many requests they served.
    a = write_run(tmp_path / "a.csv", [online_cell(0, [10.0, 11.0] * 8, runs=2)])
    b = write_run(tmp_path / "b.csv", [online_cell(0, [20.0, 22.0] * 8, runs=2)])
    ttft = metric(compare_runs(read_results(a), read_results(b), absolute=True), "kv-cache online",
                  "ttft_ms_p50")
    assert ttft.verdict == INSUFFICIENT and ttft.method.startswith("n=2 < 3")


def test_online_bootstrap_draws_runs_then_requests() -> None:
    """Runs whose requests all took 10, 20 and 30 ms: a two-stage resample's mean is the mean
    of three drawn runs (a multiple of 10/3); per-request draws would give multiples of 2.5."""
    import numpy as np

    from infer_opt.format.samples import REQUEST, MetricSamples
    from infer_opt.results.estimate import level_replicates

    values = [10.0] * 4 + [20.0] * 4 + [30.0] * 4
    ms = MetricSamples(tuple((v,) for v in values), tuple([0] * 4 + [1] * 4 + [2] * 4),
                       "mean", REQUEST)
    assert ms.n == 12 and ms.independent_n == 3
    reps = level_replicates(ms, 500, np.random.default_rng(0))
    thirds = reps * 3 / 10
    assert np.allclose(thirds, np.round(thirds)) and reps.min() >= 10 and reps.max() <= 30
    assert len(set(np.round(reps, 6))) > 3  # not a degenerate draw


# --- multiple testing --------------------------------------------------------------------------

def tpot_only(index: int, variant: str, tpot: list[float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A row whose only metric is tpot_ms_p50: one gated test per row pair."""
    row = empty_row()
    row.update(run_id="r", cell_index=index, suite="s", model="m", variant=variant,
               engine="torch", device="cpu", workload="static-batch", batch_size=1,
               prompt_tokens=8, new_tokens=16, status="ok", timed_runs=len(tpot),
               tpot_ms_p50=Stats.of(tpot).p50)
    runs = {"round": list(range(len(tpot))), "tpot_ms": tpot}
    return row, {"run_id": "r", "cell_index": index, "variant": variant,
                 "workload": {"kind": "static-batch"}, "runs": runs}


def test_intervals_widen_with_the_number_of_tests(tmp_path: Path) -> None:
    # Per-round ratios 1.05, 1.2, 1.2, 1.2, 1.2, 1.2: a resampled median is <= 1.10 only when
    # the 1.05 round is drawn 4+ times of 6: P = 0.0087. Alone (m = 1, tails 2.5%) the whole
    # interval clears the 10% gate; among 10 tests (tails 0.25%) it reaches 1.05.
    old = [10.0] * 6
    new = [10.5, 12.0, 12.0, 12.0, 12.0, 12.0]
    one = write_run(tmp_path / "one.csv", [tpot_only(0, "base", old), tpot_only(1, "v", new)])
    cmp = compare(read_results(one), baseline="base")
    assert cmp.tests_interval == 1 and cmp.confidence == pytest.approx(0.95)
    m = metric(cmp, "v", "tpot_ms_p50")
    assert m.ci is not None and m.ci[0] == pytest.approx(1.125) and m.verdict == REGRESSION
    cells = [tpot_only(0, "base", old)] + [tpot_only(i, f"v{i}", new) for i in range(1, 11)]
    cmp = compare(read_results(write_run(tmp_path / "ten.csv", cells)), baseline="base")
    assert cmp.tests_interval == 10 and cmp.confidence == pytest.approx(0.995)
    m = metric(cmp, "v1", "tpot_ms_p50")
    assert m.ci is not None and m.ci[0] == pytest.approx(1.05) and m.verdict == "within noise"


def test_output_states_the_tests_made(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cells = [tpot_only(0, "base", [10.0] * 4)] + [tpot_only(i, f"v{i}", [10.0] * 4)
                                                  for i in range(1, 5)]
    run = write_run(tmp_path / "r.csv", cells)
    assert main(["compare", str(run), "--baseline-variant", "base"]) == 0
    out = flat(capsys.readouterr().out)
    assert ("tests: 4 gated row x metric tests; 4 with bootstrap intervals, each at 98.75% "
            "(Bonferroni: 1 - 5%/4, so all 4 hold together with 95% probability); 0 on point "
            "values") in out


def test_gate_needs_the_whole_interval_beyond_the_threshold(tmp_path: Path) -> None:
    # Old TPOT 10 ms in every run; new runs at 10.5, 11.5, 12.5 ms. Point ratio (median) 1.15;
    # resampled medians of 3 runs lie in 10.5..12.5, so the interval starts at +5%.
    a = write_run(tmp_path / "a.csv", [tpot_only(0, "v", [10.0] * 3)])
    b = write_run(tmp_path / "b.csv", [tpot_only(0, "v", [10.5, 11.5, 12.5])])
    m = metric(compare_runs(read_results(a), read_results(b)), "v", "tpot_ms_p50")
    assert m.ratio == pytest.approx(1.15) and m.method == "unpaired, 3/3 runs"
    assert m.ci == (pytest.approx(1.05), pytest.approx(1.25)) and m.verdict == "within noise"
    # The same runs 20% slower each: the whole interval (+15..+35%) clears the 10% gate.
    b = write_run(tmp_path / "b.csv", [tpot_only(0, "v", [11.5, 12.5, 13.5])])
    assert metric(compare_runs(read_results(a), read_results(b)), "v", "tpot_ms_p50").verdict == REGRESSION


# --- bad input ---------------------------------------------------------------------------------

def test_nothing_in_common_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    normal = write_run(tmp_path / "normal.csv", [fake_cell(0, "kv-cache", 10.0, 1)])
    slowed = write_run(tmp_path / "slowed.csv", [fake_cell(0, "kv-cache+test-slow", 11.5, 2)])
    assert main(["compare", str(normal), str(slowed)]) == 2  # nothing matches: not a pass
    assert "no row of slowed.csv matches a row of normal.csv" in capsys.readouterr().err
    assert main(["compare", str(normal), str(slowed), "--baseline-variant", "kv-cache"]) == 1
    tail = flat(capsys.readouterr().out).split("REGRESSION in 1 of 1 rows:", 1)[1]
    assert "kv-cache+test-slow static-batch bs=1 prompt=8 new=16: tpot_ms_p50 +" in tail


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_run(tmp_path / "good.csv", [fake_cell(0, "v", 10.0, 1)])
    assert main(["compare", str(good), str(tmp_path / "none.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["compare", str(good), str(good), "--fail-above", "x=abc"]) == 2
    assert main(["compare", str(good), str(good), "--bootstrap", "10"]) == 2
    assert main(["compare", str(good), str(good), str(good)]) == 2


def test_map_splits_outside_brackets() -> None:
    from infer_opt.results.compare import parse_maps

    assert parse_maps(["kv-cache+test-slow[pct=10]=kv-cache"]) == {
        "kv-cache+test-slow[pct=10]": "kv-cache"}
    assert parse_maps(["a+p[x=1]=a+q[y=2]"]) == {"a+p[x=1]": "a+q[y=2]"}
