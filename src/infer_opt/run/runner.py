"""Run a suite: expand it into cells, run each cell in its own process, write rows as they come.

Each cell runs in a child process forked from a forkserver that has already imported torch and
transformers (saves ~10 s of imports per cell, keeps isolation): an exception, a crash, a hang
past `timeout_s` or an out-of-memory kill becomes a `failed` row and the run goes on.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from infer_opt.core.models import resolve
from infer_opt.core.schema import run_columns
from infer_opt.results.io import RunWriter
from infer_opt.run.cell import Cell, identity_row, run_cell
from infer_opt.run.plan import (
    check_out_dir,
    new_run_id,
    plan_cells,
    resolve_device,
    thread_warning,
    validate_stacks,
)
from infer_opt.run.suite import Suite

Executor = Callable[[list[Cell], float], Iterable[tuple[Cell, dict[str, Any], dict[str, Any]]]]


# --- local executor ----------------------------------------------------------------------

def die_with_parent() -> None:
    """Linux: SIGKILL this cell when its forkserver exits, which it does when the process that
    started it dies (a killed run, a cancelled Ray task): no orphaned cell keeps a core busy."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def cell_child(cell_dict: dict[str, Any], out_path: str) -> None:
    die_with_parent()
    row, samples = run_cell(cell_dict)
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"row": row, "samples": samples}, fh)
    os.replace(tmp, out_path)


_CTX: Any = None


def process_context() -> Any:
    global _CTX
    if _CTX is None:
        if "forkserver" in mp.get_all_start_methods():
            _CTX = mp.get_context("forkserver")
            _CTX.set_forkserver_preload(["infer_opt.run.preload"])
        else:
            _CTX = mp.get_context("spawn")
    return _CTX


def failed_row(cell: Cell, reason: str) -> tuple[dict[str, Any], dict[str, Any]]:
    row = identity_row(cell)
    row.update(status="failed", reason=reason)
    return row, {"run_id": cell.run_id, "cell_index": cell.index, "variant": cell.variant,
                 "workload": cell.workload}


def run_one_local(cell: Cell, timeout_s: float,
                  target: Callable[[dict[str, Any], str], None] = cell_child
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs `target(cell_dict, out_path)` (default: run_cell) in a fresh forked child."""
    ctx = process_context()
    with tempfile.TemporaryDirectory(prefix="infer-opt-cell-") as tmp:
        out_path = os.path.join(tmp, "result.json")
        proc = ctx.Process(target=target, args=(cell.to_dict(), out_path), daemon=True)
        proc.start()
        proc.join(timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join()
            return failed_row(cell, f"timeout: cell ran past {timeout_s:.0f} s and was killed")
        if os.path.exists(out_path):
            with open(out_path, encoding="utf-8") as fh:
                result = json.load(fh)
            return result["row"], result["samples"]
        code = proc.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (likely out of memory)" if -code == signal.SIGKILL else ""
            return failed_row(cell, f"crashed: killed by {name}{hint}")
        return failed_row(cell, f"crashed: exit code {code} before writing a row")


def local_executor(cells: list[Cell], timeout_s: float
                   ) -> Iterable[tuple[Cell, dict[str, Any], dict[str, Any]]]:
    for cell in cells:
        row, samples = run_one_local(cell, timeout_s)
        yield cell, row, samples


# --- the run -----------------------------------------------------------------------------

def _progress(i: int, total: int, cell: Cell, row: dict[str, Any], elapsed: float) -> str:
    status = row.get("status", "?")
    detail = ""
    if status == "ok" and row.get("decode_tokens_per_s") not in ("", None):
        detail = f"decode {float(row['decode_tokens_per_s']):.1f} tok/s, TTFT p50 {float(row['ttft_ms_p50']):.1f} ms"
    elif status != "ok":
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
    validate_stacks(suite, device, variants_filter)
    warning = thread_warning(suite.threads)
    if warning:
        log(f"infer-opt: {warning}")
    ref = resolve(model or suite.model)
    from infer_opt.core.roofline import measure_bandwidth_gb_per_s

    run_id = new_run_id(suite.name)
    cells = plan_cells(suite, run_id, ref, device, 0.0, variants_filter)
    log(f"infer-opt: suite {suite.name}, model {ref.name}, device {device}, "
        f"{len(cells)} cells, {suite.threads} threads")
    bandwidth = measure_bandwidth_gb_per_s(device, suite.threads)
    log(f"infer-opt: measured memory bandwidth {bandwidth:.1f} GB/s")
    for cell in cells:
        cell.bandwidth_gb_per_s = bandwidth
    writer = RunWriter(out_dir, run_id, run_columns(cells[0].metric_columns))
    log(f"infer-opt: writing {writer.csv_path}")
    start = time.perf_counter()
    try:
        for i, (cell, row, samples) in enumerate(executor(cells, suite.timeout_s), start=1):
            writer.add(row, samples)
            log(_progress(i, len(cells), cell, row, time.perf_counter() - start))
    finally:
        writer.close()
        from infer_opt.results.table import write_table
        from infer_opt.run.fidelity import run_store_dir

        shutil.rmtree(run_store_dir(run_id), ignore_errors=True)  # this run's fidelity store
        write_table(writer.csv_path, reference=suite.reference, also=suite.also_reference)
    return writer.csv_path
