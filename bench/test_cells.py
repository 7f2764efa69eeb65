"""The suite's cells as pytest-benchmark benchmarks: one benchmark per cell, run in-process.

Each benchmark runs one cell alone (`run/rounds.run_cell`: its own worker, warm-up and timed
runs inside, no interleaving with other variants); pytest-benchmark
times the whole cell (model load included), and `extra_info` keeps the cell's results row and
raw samples, so `infer-opt import-benchmark` rebuilds an exact results CSV from the saved JSON.

INFER_OPT_BENCH_SUITE (default quick) and INFER_OPT_BENCH_MODEL (default tiny-random; use
smollm2-135m for the real model) choose the cells.
"""

from __future__ import annotations

import os

import pytest

from infer_opt.core.models import resolve
from infer_opt.run.cell import Cell
from infer_opt.run.plan import plan_cells, resolve_device
from infer_opt.run.rounds import run_cell
from infer_opt.run.suite import load_suite

SUITE = os.environ.get("INFER_OPT_BENCH_SUITE", "quick")
MODEL = os.environ.get("INFER_OPT_BENCH_MODEL", "tiny-random")


def _cells() -> list[dict]:
    suite = load_suite(SUITE)
    ref = resolve(MODEL)
    cells = plan_cells(suite, f"pytest-benchmark-{suite.name}", ref, resolve_device(suite.device),
                       0.0)
    return [c.to_dict() for c in cells]


CELLS = _cells()


@pytest.mark.parametrize("cell", CELLS, ids=[
    f"{c['variant']}-bs{c['workload']['batch_size']}-p{c['workload']['prompt_tokens']}"
    f"-n{c['workload']['new_tokens']}" for c in CELLS])
def test_cell(benchmark, cell: dict) -> None:
    benchmark.group = f"cells {SUITE} on {MODEL}"
    row, samples = benchmark.pedantic(run_cell, args=(Cell(**cell), 600.0), rounds=1,
                                      iterations=1)
    benchmark.extra_info.update(row=row, samples=samples)
    assert row["status"] in ("ok", "skipped"), row["reason"]
