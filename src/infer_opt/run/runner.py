"""Run a suite: plan it, measure each group in interleaved rounds, write rows as they come.

Each group runs as a job (run/rounds.py): one worker process per variant, forked from a
forkserver that has already imported torch and transformers (saves ~10 s of imports per
process), all loaded side by side and timed in seeded random order, round after round. An
exception, a crash, a hang past `timeout_s` or an out-of-memory kill becomes a `failed` row of
that variant only, and the run goes on.

The runner measures and returns the CSV path; it prints nothing but the start lines (`log`)
and reports progress as events (run/progress.py). Tables and plots are the commands' work.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from infer_opt.core.models import ModelRef, resolve
from infer_opt.format.columns import run_columns
from infer_opt.format.io import ResultsWriter
from infer_opt.run.cell import Cell
from infer_opt.run.faults import WriteFailed, held
from infer_opt.run.plan import (
    check_out_dir,
    new_run_id,
    plan_cells,
    plan_jobs,
    resolve_device,
    thread_warning,
    validate_stacks,
)
from infer_opt.run.progress import CellDone, OnEvent, RunStarted, ignore
from infer_opt.run.rounds import CellResult, Job, run_job
from infer_opt.run.suite import Suite


class Executor(Protocol):
    """Runs jobs and yields their results, in any order (each carries its cell). `on_event`
    hears of progress inside a job where the executor can see it (run/progress.py)."""

    def __call__(self, jobs: list[Job], on_event: OnEvent = ignore) -> Iterable[CellResult]: ...


def local_executor(jobs: list[Job], on_event: OnEvent = ignore) -> Iterable[CellResult]:
    """Every job on this machine, one after the other."""
    for job in jobs:
        yield from run_job(job, on_event=on_event)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- planning ----------------------------------------------------------------------------

@dataclass
class Planned:
    """A run checked and planned: every cell, before any file is written."""

    run_id: str
    ref: ModelRef
    device: str
    cells: list[Cell]
    idle: set[str]  # variants that load nothing here (skipped: no CUDA, a missing package;
                    # failed: a plugin raised while its stack was built)


def plan_run(suite: Suite, out_dir: Path, model: str | None = None,
             variants_filter: list[str] | None = None, log: Callable[[str], None] = _stderr,
             run_name: str | None = None) -> Planned:
    """Cheap checks first (run/plan.py), then the model, then every cell against it; then the
    machine's memory bandwidth (every cell's roofline). Bad input raises UserError before
    any file is written."""
    check_out_dir(out_dir)
    device = resolve_device(suite.device)
    stacks = validate_stacks(suite, device, variants_filter, model)
    warning = thread_warning(suite.threads)
    if warning:
        log(f"infer-opt: {warning}")
    ref = resolve(model or suite.model)
    from infer_opt.core.roofline import measure_bandwidth_gb_per_s
    from infer_opt.core.telemetry import machine_busy_now

    run_id = new_run_id(run_name or suite.name)
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
    # Skipped (no CUDA, a missing package) or failed (a plugin raised while its stack was
    # built): nothing to load.
    idle = {v for v, s in stacks.items() if s.unavailable is not None or s.failed is not None}
    return Planned(run_id, ref, device, cells, idle)


# --- recording ---------------------------------------------------------------------------

class Recorder:
    """The run's files while it goes: rows written whole (a signal waits until the line is
    down; a failed write is cut back off), and the run's scratch folder (fidelity store),
    owned under a lock and removed at the end; stale folders of dead runs are removed first."""

    def __init__(self, out_dir: Path, run_id: str, metric_columns: list[str]) -> None:
        from infer_opt.run.fidelity import run_store_dir
        from infer_opt.run.scratch import Scratch, remove_stale

        store = run_store_dir(run_id)
        remove_stale(store.parent)
        self.scratch = Scratch(store)
        try:
            self.writer = ResultsWriter(out_dir, run_id, run_columns(metric_columns))
        except OSError as exc:
            self.scratch.release()
            raise WriteFailed(f"cannot write results in {out_dir}: {exc.strerror or exc}")
        self.csv_path = self.writer.csv_path
        self.rows = 0

    def add(self, result: CellResult) -> None:
        w = self.writer
        sizes = {p: p.stat().st_size for p in (w.csv_path, w.samples_path)}
        try:
            with held():
                w.add(result.row, result.samples)
        except OSError as exc:
            self._cut_back(sizes)
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise WriteFailed(f"{'disk full' if full else 'write failed'} while writing "
                              f"{w.csv_path} ({exc.strerror or exc}); the run stopped; "
                              f"{self.rows} finished rows are kept") from None
        self.rows += 1

    def _cut_back(self, sizes: dict[Path, int]) -> None:
        """Close the files (their unwritten buffers may fail again) and cut each back to its
        last whole line."""
        for fh in (self.writer._csv, self.writer._samples):
            try:
                fh.close()
            except OSError:
                pass
        for path, size in sizes.items():
            os.truncate(path, size)

    def close(self) -> None:
        try:
            self.writer.close()
        except OSError:
            pass  # _cut_back closed them already, or the last flush failed: rows are whole
        finally:
            self.scratch.release()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:
        with held():  # a second signal must not cut the cleanup short
            self.close()


# --- the run -----------------------------------------------------------------------------

@contextmanager
def logs_beside(csv_path: Path) -> Iterator[None]:
    """Served variants (engines/http) keep their servers' logs in <run_id>.servers/, and full
    tracebacks of failed cells go to <run_id>.errors.log (run/faults.py), not the terminal (the
    row's reason holds one line): set for this run's workers (run/rounds.WORKER_ENV), restored
    after it. `run` and `sweep` both."""
    saved = {k: os.environ.get(k) for k in ("INFER_OPT_SERVER_LOGS", "INFER_OPT_ERROR_LOG")}
    stem = str(csv_path.with_suffix(""))
    os.environ["INFER_OPT_SERVER_LOGS"] = stem + ".servers"
    os.environ["INFER_OPT_ERROR_LOG"] = stem + ".errors.log"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_suite(suite: Suite, out_dir: Path, model: str | None = None,
              variants_filter: list[str] | None = None,
              executor: Executor = local_executor, log: Callable[[str], None] | None = None,
              on_event: OnEvent = ignore) -> Path:
    """Runs every cell; returns the CSV path. Bad input raises UserError before any file; an
    interrupt (run/faults.Interrupted) or a failed write (WriteFailed) leaves whole rows."""
    log = log or _stderr
    planned = plan_run(suite, out_dir, model, variants_filter, log)
    cells = planned.cells
    jobs = plan_jobs(suite, cells, planned.idle)
    with Recorder(out_dir, planned.run_id, cells[0].metric_columns) as rec, \
            logs_beside(rec.csv_path):
        log(f"infer-opt: writing {rec.csv_path} ({len(jobs)} groups in interleaved rounds)")
        on_event(RunStarted(planned.run_id, rec.csv_path, len(cells), len(jobs)))
        start = time.perf_counter()
        results = iter(executor(jobs, on_event))
        try:
            for result in results:
                rec.add(result)
                on_event(CellDone(rec.rows, len(cells), result.cell, result.row,
                                  time.perf_counter() - start))
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # a generator left early: its workers are killed (run/rounds.py)
    return rec.csv_path


__all__ = ["Executor", "Planned", "Recorder", "local_executor", "plan_run", "run_suite"]
