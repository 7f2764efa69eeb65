"""The runner on the tiny random model: rows, files, isolation of failures."""

import csv
import json
import re
from pathlib import Path

import pytest

from infer_opt import SCHEMA_VERSION
from infer_opt.core.greedy import greedy_match
from infer_opt.format.columns import COLUMNS
from infer_opt.results.table import render
from infer_opt.run.progress import CellDone, RunStarted, Timing
from infer_opt.run.runner import run_suite
from infer_opt.run.suite import load_suite

from .conftest import write_suite
from .tables import flat

SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 60
[[group]]
variants = ["baseline", "kv-cache", "static-cache", "kv-cache+sdpa", "sdpa-flash",
            "test-raise", "test-missing"]
batch_sizes = [1, 3]
prompt_tokens = 12
new_tokens = 6
min_repeats = 2
max_repeats = 2
warmup_runs = 1
"""


EVENTS: list = []  # progress events of tiny_run (run/progress.py)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, str]], Path]:
    tmp = tmp_path_factory.mktemp("run")
    suite = load_suite(str(write_suite(tmp / "tiny.toml", SUITE)))
    csv_path = run_suite(suite, tmp / "results", log=lambda _m: None, on_event=EVENTS.append)
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh)), csv_path


def by(rows: list[dict[str, str]], variant: str, bs: str = "1") -> dict[str, str]:
    return next(r for r in rows if r["variant"] == variant and r["batch_size"] == bs)


def test_every_cell_has_a_row_with_the_schema(tiny_run) -> None:
    rows, csv_path = tiny_run
    assert len(rows) == 7 * 2
    assert list(rows[0]) == COLUMNS
    # Written as they finish: in plan order within a group's chunk of variants.
    assert sorted(int(r["cell_index"]) for r in rows) == list(range(14))
    # The runner measures; presenting (the table) is the command's work.
    assert not csv_path.with_suffix(".md").exists()


def test_progress_events_follow_the_rounds(tiny_run) -> None:
    rows, csv_path = tiny_run
    started = [e for e in EVENTS if isinstance(e, RunStarted)]
    assert started == [RunStarted(started[0].run_id, csv_path, len(rows), 1)]
    assert EVENTS[0] == started[0]
    done = [e for e in EVENTS if isinstance(e, CellDone)]
    assert [e.done for e in done] == list(range(1, len(rows) + 1))
    assert {e.total for e in done} == {len(rows)}
    assert sorted(e.cell.index for e in done) == sorted(int(r["cell_index"]) for r in rows)
    # One Timing event before each timed run: as many per variant and workload as its row's
    # timed_runs, round by round, and a workload's rounds before its cells are done.
    timing = [e for e in EVENTS if isinstance(e, Timing)]
    for r in rows:
        mine = [e for e in timing if e.variant == r["variant"]
                and e.workload.startswith(f"bs={r['batch_size']} ")]
        assert [e.round_index for e in mine] == list(range(int(r["timed_runs"] or 0)))
    assert {(e.group, e.workloads, e.max_rounds, e.cells) for e in timing} == {
        (rows[0]["group"], 2, 2, 7)}
    first_done = EVENTS.index(done[0])
    assert all(e.workload_index == 0 for e in EVENTS[:first_done] if isinstance(e, Timing))


def test_ok_rows_have_metrics(tiny_run) -> None:
    rows, _ = tiny_run
    for variant in ("baseline", "kv-cache", "static-cache", "kv-cache+sdpa"):
        for bs in ("1", "3"):
            r = by(rows, variant, bs)
            assert r["status"] == "ok", r["reason"]
            for col in ("ttft_ms_p50", "tpot_ms_p50", "itl_ms_max", "e2e_ms_max",
                        "decode_tokens_per_s", "weight_mb", "peak_rss_mb", "first_call_ms",
                        "achieved_gb_per_s", "torch_version", "git_commit", "timestamp_utc",
                        "timed_runs", "cpu_steal_pct", "other_cpu_pct", "load_avg_1m_start"):
                assert r[col] != "", (variant, col)
            # % of the machine's bandwidth only where the step is memory-bound.
            if variant == "baseline":
                assert r["roofline_pct"] == "" and "roofline: no KV cache" in r["notes"]
            else:
                assert float(r["roofline_pct"]) > 0
            assert float(r["e2e_ms_p50"]) >= float(r["ttft_ms_p50"]) > 0
            assert r["torch_threads"] == "1"
            assert r["schema_version"] == str(SCHEMA_VERSION)
            assert r["itl_ms_p99"] == "" and r["tpot_ms_p90"] == ""  # too few samples for them


def test_fidelity_is_measured_once_per_variant_and_reused(tiny_run) -> None:
    rows, csv_path = tiny_run
    from infer_opt.run.fidelity import FIDELITY_COLUMNS

    for variant in ("baseline", "kv-cache", "static-cache", "kv-cache+sdpa"):
        first, second = by(rows, variant, "1"), by(rows, variant, "3")
        assert "fidelity: measured once" not in first["notes"]
        note = f"fidelity: measured once per variant, in cell {first['cell_index']}"
        assert note in second["notes"]
        assert [second[c] for c in FIDELITY_COLUMNS] == [first[c] for c in FIDELITY_COLUMNS]
    run_id = rows[0]["run_id"]
    from infer_opt.run.fidelity import run_store_dir

    assert not run_store_dir(run_id).exists()  # the run's store is removed when it ends


def test_baseline_row_is_pinned(tiny_run) -> None:
    rows, _ = tiny_run
    r = by(rows, "baseline")
    assert (r["dtype"], r["attn_implementation"], r["kv_cache"]) == ("float32", "eager", "none")


def test_cuda_plugin_is_skipped_with_reason(tiny_run) -> None:
    rows, _ = tiny_run
    r = by(rows, "sdpa-flash")
    assert r["status"] == "skipped"
    assert r["reason"] == "sdpa-flash: needs CUDA (device is cpu)"
    assert by(rows, "test-missing")["status"] == "skipped"


def test_exception_becomes_failed_row(tiny_run) -> None:
    rows, csv_path = tiny_run
    r = by(rows, "test-raise", "3")
    assert r["status"] == "failed"
    assert r["reason"] == "RuntimeError: deliberate failure with a second line"
    # The full traceback is kept beside the results (run/faults.record_traceback), not printed.
    log = csv_path.with_suffix(".errors.log").read_text()
    assert "Traceback" in log and "deliberate failure" in log


def test_cached_variants_generate_baseline_tokens(tiny_run) -> None:
    rows, csv_path = tiny_run
    samples = [json.loads(line) for line in csv_path.with_name(
        csv_path.stem + ".samples.jsonl").read_text().splitlines()]
    tokens = {(s["variant"], s["workload"]["batch_size"]): s.get("tokens") for s in samples}
    ref = tokens[("baseline", 3)]
    assert len(ref) == 3 and len(ref[0]) == 6
    for variant in ("kv-cache", "static-cache", "kv-cache+sdpa"):
        assert tokens[(variant, 3)] == ref, variant
        assert tokens[(variant, 1)] == ref[:1], variant


def test_table_shows_speedup_and_match(tiny_run) -> None:
    _, csv_path = tiny_run
    text = flat(render(csv_path))
    line = next(ln for ln in text.splitlines() if ln.startswith("| kv-cache | 3 |"))
    # paired by round against baseline: median per-round ratio and its 95% interval
    assert re.search(r"\| \d+\.\d\dx \[\d+\.\d\d, \d+\.\d\d\] \|", line), line
    assert "| 6/6 |" in line
    assert "needs CUDA" in text


def test_table_divides_by_another_reference_too(tiny_run) -> None:
    _, csv_path = tiny_run
    text = flat(render(csv_path, "baseline", ["kv-cache"])).split("## Speedup vs fidelity", 1)[1]
    assert "| front | variant | speedup | vs kv-cache | KL mean |" in text
    own = next(ln for ln in text.splitlines() if "| kv-cache | " in ln)
    assert own.split(" | ")[3] == "1.00x"  # kv-cache against itself, exactly


def test_greedy_match_prefix() -> None:
    assert greedy_match([[1, 2, 3]], [[1, 2, 3]]) == 3
    assert greedy_match([[1, 9, 3], [1, 2, 3]], [[1, 2, 3], [1, 2, 3]]) == 1
    assert greedy_match([], [[1]]) == 0


def test_crash_and_hang_become_failed_rows(tmp_path: Path) -> None:
    body = SUITE.replace('timeout_s = 60', 'timeout_s = 8').replace(
        '''variants = ["baseline", "kv-cache", "static-cache", "kv-cache+sdpa", "sdpa-flash",
            "test-raise", "test-missing"]''', 'variants = ["test-crash", "test-hang", "kv-cache"]'
    ).replace("batch_sizes = [1, 3]", "batch_sizes = [1]")
    suite = load_suite(str(write_suite(tmp_path / "s.toml", body)))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["failed", "failed", "ok"]
    assert rows[0]["reason"] == "crashed: exit code 3 before answering"
    assert rows[1]["reason"] == "timeout: no answer to load within 8 s; the worker was killed"


def test_a_worker_dying_mid_rounds_fails_only_its_own_rows(tmp_path: Path) -> None:
    body = SUITE.replace(
        '''variants = ["baseline", "kv-cache", "static-cache", "kv-cache+sdpa", "sdpa-flash",
            "test-raise", "test-missing"]''', 'variants = ["kv-cache+test-crash-late", "kv-cache"]'
    )
    suite = load_suite(str(write_suite(tmp_path / "s.toml", body)))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    # bs 1: 6 steps of warm-up, then it dies in its 2nd timed run; bs 3: its worker is gone.
    assert [(r["variant"], r["status"]) for r in rows] == [
        ("kv-cache+test-crash-late", "failed"), ("kv-cache", "ok"),
        ("kv-cache+test-crash-late", "failed"), ("kv-cache", "ok")]
    assert rows[0]["reason"] == rows[2]["reason"] == "crashed: exit code 7 before answering"
    assert rows[1]["timed_runs"] == rows[3]["timed_runs"] == "2"


def test_rounds_are_interleaved_and_recorded(tiny_run) -> None:
    rows, csv_path = tiny_run
    samples = {int(json.loads(x)["cell_index"]): json.loads(x) for x in
               csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()}
    for r in rows:
        if r["status"] != "ok":
            continue
        n = int(r["timed_runs"])
        assert n == 2 and r["sampling_stop"] in ("precision", "max_repeats")  # min = max = 2
        assert samples[int(r["cell_index"])]["runs"]["round"] == list(range(n))
        assert float(r["tpot_ms_p50_ci_low"]) <= float(r["tpot_ms_p50"]) <= float(
            r["tpot_ms_p50_ci_high"])


def test_round_order_is_a_seeded_shuffle() -> None:
    from infer_opt.run.rounds import round_order

    variants = ["a", "b", "c", "d", "e"]
    orders = [round_order(variants, 0, 0, r) for r in range(8)]
    assert all(sorted(o) == variants for o in orders)  # every variant once per round
    assert len({tuple(o) for o in orders}) > 1  # the order changes between rounds
    assert orders == [round_order(variants, 0, 0, r) for r in range(8)]  # reproducible
    assert round_order(variants, 1, 0, 0) != round_order(variants, 0, 0, 0) or \
        round_order(variants, 1, 0, 1) != round_order(variants, 0, 0, 1)


def test_an_engine_with_its_own_environment_runs_under_its_python(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker of such an engine is a process of that environment's Python, in the same
    interleaved rounds and the same CSV as the others; without the environment its rows are
    skipped with the reason."""
    import sys

    from infer_opt.engines.base import environment_reason

    # The "environment": a launcher that marks the processes it starts, then runs this Python.
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\nINFER_OPT_TEST_ENV_MARK=yes exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    monkeypatch.setenv("INFER_OPT_PYTHON_TEST_ENV", str(python))
    environment_reason.cache_clear()
    body = SUITE.replace(
        '''variants = ["baseline", "kv-cache", "static-cache", "kv-cache+sdpa", "sdpa-flash",
            "test-raise", "test-missing"]''', 'variants = ["kv-cache", "test-env"]'
    ).replace("batch_sizes = [1, 3]", "batch_sizes = [2]")
    suite = load_suite(str(write_suite(tmp_path / "s.toml", body)))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    assert rows["test-env"]["status"] == "ok", rows["test-env"]["reason"]
    assert "worker started by the test environment: yes" in rows["test-env"]["notes"]
    samples = {json.loads(x)["variant"]: json.loads(x) for x in
               csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()}
    assert samples["test-env"]["tokens"] == samples["kv-cache"]["tokens"]
    assert samples["test-env"]["runs"]["round"] == samples["kv-cache"]["runs"]["round"]

    monkeypatch.setenv("INFER_OPT_PYTHON_TEST_ENV", str(tmp_path / "missing" / "python"))
    environment_reason.cache_clear()
    csv_path = run_suite(suite, tmp_path / "results2", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    assert rows["test-env"]["status"] == "skipped"
    assert rows["test-env"]["reason"].startswith(
        "test-env: needs its own environment .venv-test-env (make setup-test-env)")
