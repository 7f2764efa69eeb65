"""`infer-opt sweep`: planned like `run` (plugins' metric columns in the CSV), run through the
executors (local and Ray), one row per probe; the search itself on a known boundary."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from infer_opt import cli
from infer_opt.format.io import read_results
from infer_opt.workloads.online.sweep import search_max_rate

from .conftest import write_suite

SUITE = """
name = "tinysweep"
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 120
[[group]]
name = "load"
workload = "online"
variants = ["kv-cache+prune-magnitude[sparsity=0.5]"]
policies = ["continuous"]
arrival = "poisson"
arrival_rates = [2.0]
num_requests = 4
prompt_tokens = 8
new_tokens = 4
max_batch_size = 4
ttft_slo_ms = 600000
warmup_requests = 1
min_repeats = 1
max_repeats = 1
"""


def _sweep(tmp_path: Path, *extra: str) -> Path:
    suite = write_suite(tmp_path / "s.toml", SUITE)
    out = tmp_path / "results"
    rc = cli.main(["sweep", "--suite", str(suite), "--group", "load", "--out", str(out),
                   "--max-doublings", "1", "--bisect-steps", "0", *extra])
    assert rc == 0
    [csv_path] = out.glob("*.csv")
    return csv_path


def _check_rows(csv_path: Path) -> None:
    run = read_results(csv_path)
    assert "weights_zero_pct" in run.extra_columns  # the plugin's declared metric column
    # Passes at 2/s (the SLO cannot fail here), doubles once to 4/s: two probes, two rows.
    assert [r["arrival_rate_per_s"] for r in run.rows] == ["2", "4"]
    assert [r["cell_index"] for r in run.rows] == ["0", "1"]
    for r in run.rows:
        assert r["status"] == "ok", r["reason"]
        assert r["variant"] == "kv-cache+prune-magnitude[sparsity=0.5]"
        assert float(r["weights_zero_pct"]) == 50.0
    assert csv_path.with_suffix(".md").is_file()
    summary = csv_path.with_name(csv_path.stem + ".sweep.md").read_text()
    assert "highest rate meeting the SLO 4 req/s (never failed" in summary


def test_sweep_writes_the_plugins_metric_columns(tmp_path: Path) -> None:
    _check_rows(_sweep(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray not installed (pip install 'infer-opt[cluster]')")
def test_sweep_runs_its_probes_on_ray(tmp_path: Path) -> None:
    _check_rows(_sweep(tmp_path, "--executor", "ray"))


def test_sweep_refuses_an_executor_option_it_cannot_use(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(tmp_path / "s.toml", SUITE)
    rc = cli.main(["sweep", "--suite", str(suite), "--out", str(tmp_path / "r"),
                   "--address", "localhost:6379"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["infer-opt: error: address: only used with --executor ray"]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("boundary", [0.3, 1.0, 2.5, 7.9, 40.0])
def test_search_brackets_then_bisects_a_known_boundary(boundary: float) -> None:
    res = search_max_rate(lambda rate: rate <= boundary, 1.0, max_doublings=6, bisect_steps=4)
    assert res.best_rate is not None and res.first_fail is not None
    assert res.best_rate <= boundary < res.first_fail
    # Bracketed as [lo, 2 lo] with lo <= boundary, then halved 4 times.
    assert res.first_fail - res.best_rate <= boundary / 16 + 1e-12
    assert all(ok == (rate <= boundary) for rate, ok in res.probes)
