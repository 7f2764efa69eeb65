"""Run a suite: plan it, measure each group in interleaved rounds, write rows as they come.

Each group runs as a job (run/rounds.py): one worker process per variant, forked from a
forkserver that has already imported torch and transformers (saves ~10 s of imports per
process), all loaded side by side and timed in seeded random order, round after round. An
exception, a crash, a hang past `timeout_s` or an out-of-memory kill becomes a `failed` row of
that variant only, and the run goes on.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from infer_opt.core.models import resolve
from infer_opt.core.schema import run_columns
from infer_opt.results.io import RunWriter
from infer_opt.run.cell import Cell
from infer_opt.run.plan import (
    check_out_dir,
    new_run_id,
    plan_cells,
    plan_jobs,
    resolve_device,
    thread_warning,
    validate_stacks,
)
from infer_opt.run.rounds import Job, Row, run_job
from infer_opt.run.suite import Suite

# An executor runs jobs and yields their rows, in any order (each carries its cell_index).
Executor = Callable[[list[Job]], Iterable[Row]]

def local_executor(jobs: list[Job]) -> Iterable[Row]:
    """Every job on this machine, one after the other."""
    for job in jobs:
        yield from run_job(job)


# --- the run -----------------------------------------------------------------------------

def _progress(i: int, total: int, cell: Cell, row: dict[str, Any], elapsed: float) -> str:
    status = row.get("status", "?")
    detail = ""
    if status == "ok" and row.get("decode_tokens_per_s") not in ("", None):
        detail = (f"decode {float(row['decode_tokens_per_s']):.1f} tok/s, TTFT p50 "
                  f"{float(row['ttft_ms_p50']):.1f} ms, n={row.get('timed_runs')}")
    elif status == "ok":
        detail = f"n={row.get('timed_runs')}"
    else:
        detail = str(row.get("reason", ""))
    return f"[{i}/{total}] {cell.label()}: {status} {detail} ({elapsed:.1f} s)"


def run_suite(suite: Suite, out_dir: Path, model: str | None = None,
              variants_filter: list[str] | None = None,
              executor: Executor = local_executor, log: Callable[[str], None] | None = None) -> Path:
    """Runs every cell; returns the CSV path. Bad input raises UserError before any file."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    # Cheap checks first (run/plan.py), then the model, then every cell against it.
    check_out_dir(out_dir)
    device = resolve_device(suite.device)
    stacks = validate_stacks(suite, device, variants_filter, model)
    warning = thread_warning(suite.threads)
    if warning:
        log(f"infer-opt: {warning}")
    ref = resolve(model or suite.model)
    from infer_opt.core.roofline import measure_bandwidth_gb_per_s
    from infer_opt.core.telemetry import machine_busy_now

    run_id = new_run_id(suite.name)
    cells = plan_cells(suite, run_id, ref, device, 0.0, variants_filter)
    log(f"infer-opt: suite {suite.name}, model {ref.name}, device {device}, "
        f"{len(cells)} cells, {suite.threads} threads")
    busy = machine_busy_now()
    if busy:
        log(f"infer-opt: warning: {busy}")
    bandwidth = measure_bandwidth_gb_per_s(device, suite.threads)
    log(f"infer-opt: measured memory bandwidth {bandwidth:.1f} GB/s")
    for cell in cells:
        cell.bandwidth_gb_per_s = bandwidth
    jobs = plan_jobs(suite, cells, {v for v, s in stacks.items() if s.unavailable is not None})
    writer = RunWriter(out_dir, run_id, run_columns(cells[0].metric_columns))
    # Served variants (engines/http) keep their servers' logs beside the results.
    os.environ["INFER_OPT_SERVER_LOGS"] = str(writer.csv_path.with_suffix("")) + ".servers"
    log(f"infer-opt: writing {writer.csv_path} ({len(jobs)} groups in interleaved rounds)")
    start = time.perf_counter()
    try:
        for i, (cell, row, samples) in enumerate(executor(jobs), start=1):
            writer.add(row, samples)
            log(_progress(i, len(cells), cell, row, time.perf_counter() - start))
    finally:
        writer.close()
        from infer_opt.results.table import write_table
        from infer_opt.run.fidelity import run_store_dir

        shutil.rmtree(run_store_dir(run_id), ignore_errors=True)  # this run's fidelity store
        write_table(writer.csv_path, reference=suite.reference, also=suite.also_reference)
    return writer.csv_path
