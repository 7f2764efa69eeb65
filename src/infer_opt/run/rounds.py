"""Interleaved rounds: the variants of a group measured side by side in time.

A job is one suite group (or a chunk of it, `max_workers` variants at most): one worker process
per variant, all loaded at once (run/worker.py). For each workload of the group, every worker
warms up (one at a time), then the timed runs go in rounds: each round runs one timed run of
every variant still sampling, in a fresh seeded random order, one process at a time. Drift of a
shared machine (another job, a clock change) then lands on all variants alike instead of on
whichever variant happened to run during it, and two variants can be compared round by round
(the samples keep each run's round). A variant leaves the rounds when its sampling rule is met
(workloads/base.Sampled, core/sampling.py); the workload ends when every variant has.
Telemetry (core/telemetry.py) covers the whole span of a workload's rounds: every row of it
was measured on the same machine state, and says whether that machine was busy.

Isolation stays: an exception in a worker fails that cell, a crash or a request past `timeout_s`
kills that worker and fails that variant's remaining cells; the other variants go on.
"""

from __future__ import annotations

import math
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from infer_opt.core.sampling import SamplingRule
from infer_opt.core.stats import bootstrap_median
from infer_opt.core.telemetry import Telemetry
from infer_opt.engines.base import environment_python
from infer_opt.run.cell import Cell, identity_row
from infer_opt.run.faults import record_text, record_traceback
from infer_opt.run.progress import Loading, OnEvent, Timing, ignore


class CellResult(NamedTuple):
    """What measuring one cell gives: its row (a CSV line) and its samples (a JSONL line)."""

    cell: Cell
    row: dict[str, Any]
    samples: dict[str, Any]

# A worker that has just finished a run keeps its OpenMP threads spinning for a moment; the next
# variant's run waits this long so it does not share the cores with them.
SETTLE_S = 0.05
# Environment a worker takes from the process that starts it (a Ray task's GPU).
WORKER_ENV = ("CUDA_VISIBLE_DEVICES", "INFER_OPT_SERVER_LOGS", "INFER_OPT_ERROR_LOG")


@dataclass
class Job:
    """One group's cells (variants x workloads, in plan order), measured in interleaved rounds."""

    cells: list[Cell]
    timeout_s: float
    seed: int = 0
    env: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"cells": [c.to_dict() for c in self.cells], "timeout_s": self.timeout_s,
                "seed": self.seed, "env": self.env}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls([Cell(**c) for c in d["cells"]], d["timeout_s"], d["seed"], d["env"])

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(c.variant for c in self.cells))

    @property
    def workloads(self) -> list[str]:
        """Each workload once, as a sort-stable key (its JSON)."""
        import json

        return list(dict.fromkeys(json.dumps(c.workload, sort_keys=True) for c in self.cells))


class WorkerGone(Exception):
    """The worker crashed, hung past the timeout or could not load: its cells fail."""


class WorkerHandle:
    """The coordinator's side of one variant's worker process.

    Usually a child of the forkserver (torch already imported); for an engine with an
    environment of its own (Engine.environment), a process of that environment's Python,
    connected over a socket pair: the same worker code and messages either way.
    """

    def __init__(self, first: Cell, timeout_s: float, env: dict[str, str | None],
                 python: Path | None = None) -> None:
        from multiprocessing.connection import Connection

        from infer_opt.run.worker import process_context, worker_main

        self.timeout_s = timeout_s
        if python is None:
            ctx = process_context()
            self.conn, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, first.to_dict(), env),
                               daemon=True)
            proc.start()
            child.close()
            self.proc: Any = proc
        else:
            ours, theirs = socket.socketpair()
            self.proc = _Popen([str(python), "-m", "infer_opt.run.worker",
                                str(theirs.fileno())], pass_fds=(theirs.fileno(),))
            theirs.close()
            self.conn = Connection(ours.detach())
            self.conn.send((first.to_dict(), env))
        self.reply("load")

    def call(self, *msg: Any) -> Any:
        self.conn.send(msg)
        return self.reply(str(msg[0]))

    def reply(self, what: str) -> Any:
        """The worker's answer; WorkerGone (worker killed) or RuntimeError (cell failed)."""
        if not self.conn.poll(self.timeout_s):
            self.kill()
            raise WorkerGone(f"timeout: no answer to {what} within {self.timeout_s:.0f} s; "
                             "the worker was killed")
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            raise WorkerGone(_exit_reason(self.proc.exitcode)) from None
        if status == "error" and what == "load":
            self.kill()
            raise WorkerGone(value)
        if status == "error":
            raise RuntimeError(value)
        return value

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(("exit",))
            except OSError:
                pass
            self.proc.join(10)
        self.kill()


class _Popen(subprocess.Popen):  # type: ignore[type-arg]
    """subprocess.Popen with the multiprocessing.Process calls WorkerHandle uses."""

    def is_alive(self) -> bool:
        return self.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    @property
    def exitcode(self) -> int | None:
        return self.returncode


def _exit_reason(code: int | None) -> str:
    import signal

    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (likely out of memory)" if -code == signal.SIGKILL else ""
        return f"crashed: killed by {name}{hint}"
    return f"crashed: exit code {code} before answering"


def samples_head(cell: Cell) -> dict[str, Any]:
    """The samples line of a cell that measured nothing: its identity only."""
    return {"run_id": cell.run_id, "cell_index": cell.index, "variant": cell.variant,
            "workload": cell.workload}


def failed_row(cell: Cell, reason: str) -> CellResult:
    row = identity_row(cell)
    row.update(status="failed", reason=reason)
    return CellResult(cell, row, samples_head(cell))


def _skipped(cell: Cell, stack: Any, reason: str) -> CellResult:
    from infer_opt.core.env import environment

    row = identity_row(cell)
    s = stack.settings
    row.update(environment(cell.device, cell.threads))
    row.update(status="skipped", reason=reason, engine=s.engine, dtype=s.dtype,
               attn_implementation=s.attn_implementation, kv_cache=s.kv_cache)
    return CellResult(cell, row, samples_head(cell))


def round_order(variants: list[str], seed: int, workload_index: int, round_index: int
                ) -> list[str]:
    """The order of one round: a fresh shuffle, seeded by (seed, workload, round), so a run is
    reproducible and no variant always goes first (or right after a given other one)."""
    order = list(variants)
    random.Random(f"{seed}-{workload_index}-{round_index}").shuffle(order)
    return order


def run_job(job: Job, log: Callable[[str], None] = lambda _m: None,
            on_event: OnEvent = ignore) -> Iterator[CellResult]:
    """Measure a job's cells in interleaved rounds; rows come out workload by workload.
    `on_event` hears of each timed run before it starts (run/progress.Timing).

    Left early (an interrupt, or the caller closing the generator), the workers are killed
    rather than asked to exit: one may be in the middle of a long timed run."""
    import json

    from infer_opt.core.stack import run_stack
    from infer_opt.workloads.base import workload_from_dict

    first = job.cells[0]
    stacks = {v: run_stack(v, first.device, first.model["name"], first.engine_defaults)
              for v in job.variants}
    for stack in stacks.values():
        if stack.failed is not None:  # the plugin's traceback: the error log, not the terminal
            record_text(stack.failed_traceback)
    by_key = {(c.variant, json.dumps(c.workload, sort_keys=True)): c for c in job.cells}
    workers: dict[str, WorkerHandle] = {}
    gone: dict[str, str] = {}  # variant -> why its worker is gone
    env = {k: os.environ.get(k) for k in WORKER_ENV} | job.env
    finished = False
    try:
        for i, v in enumerate(job.variants):  # one at a time: loading is not what is measured
            if stacks[v].unavailable is not None or stacks[v].failed is not None:
                continue
            cell = next(c for c in job.cells if c.variant == v)
            on_event(Loading(cell.group, v, i, len(job.variants)))
            engine = stacks[v].engine
            python = (environment_python(engine.name, engine.environment)
                      if engine.environment else None)
            try:
                workers[v] = WorkerHandle(cell, job.timeout_s, env, python)
            except WorkerGone as exc:
                gone[v] = str(exc)
                log(f"  {v}: worker did not start: {exc}")
        for wi, wkey in enumerate(job.workloads):
            yield from _run_workload(job, wi, wkey, stacks, by_key, workers, gone,
                                     workload_from_dict(json.loads(wkey)), log, on_event)
        finished = True
    finally:
        for handle in workers.values():
            if finished:
                handle.close()
            else:
                handle.kill()


def run_cell(cell: Cell, timeout_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """One cell alone (its own worker, its timed runs one after another): a job of one."""
    [result] = list(run_job(Job([cell], timeout_s, cell.seed)))
    return result.row, result.samples


def _run_workload(job: Job, wi: int, wkey: str, stacks: dict[str, Any],
                  by_key: dict[tuple[str, str], Cell], workers: dict[str, WorkerHandle],
                  gone: dict[str, str], workload: Any, log: Callable[[str], None],
                  on_event: OnEvent = ignore) -> Iterator[CellResult]:
    done: list[CellResult] = []
    sampling: list[str] = []
    for v in job.variants:
        cell = by_key.get((v, wkey))
        if cell is None:
            continue
        stack = stacks[v]
        if stack.failed is not None:
            done.append(failed_row(cell, stack.failed))
            continue
        skip = stack.unavailable or getattr(workload, "skip_reason", lambda _s: None)(
            stack.settings)
        if skip is not None:
            done.append(_skipped(cell, stack, skip))
        elif v in gone:
            done.append(failed_row(cell, gone[v]))
        else:
            try:
                workers[v].call("prepare", cell.to_dict())
                sampling.append(v)
            except (WorkerGone, RuntimeError) as exc:
                done.append(_lost(cell, v, exc, workers, gone))
    figures: dict[str, list[float]] = {v: [] for v in sampling}
    timed: dict[str, float] = {v: 0.0 for v in sampling}
    stops: dict[str, str] = {}
    rule = SamplingRule(min_repeats=workload.min_repeats, min_timed_s=workload.min_timed_s,
                        target_precision_pct=workload.target_precision_pct,
                        max_repeats=workload.max_repeats, max_timed_s=workload.max_timed_s,
                        seed=job.seed)
    telemetry = Telemetry().start()  # the machine while this workload's rounds ran
    active = list(sampling)
    round_index = 0
    cells = sum(1 for v in job.variants if (v, wkey) in by_key)
    while active:
        for v in round_order(active, job.seed, wi, round_index):
            cell = by_key[(v, wkey)]
            on_event(Timing(group=cell.group, workload=cell.label().removeprefix(v).strip(),
                            workload_index=wi, workloads=len(job.workloads),
                            round_index=round_index, max_rounds=workload.max_repeats,
                            variant=v, cells=cells))
            try:
                figure, seconds = workers[v].call("run", round_index)
            except (WorkerGone, RuntimeError) as exc:
                done.append(_lost(cell, v, exc, workers, gone))
                active.remove(v)
                continue
            figures[v].append(figure)
            timed[v] += seconds
            reason = rule.decide(figures[v], timed[v])
            if reason is not None:
                stops[v] = reason
                active.remove(v)
            time.sleep(SETTLE_S)
        round_index += 1
    machine = telemetry.stop()
    for v in sampling:
        if v not in stops:
            continue  # failed mid-way: its row is already in `done`
        cell = by_key[(v, wkey)]
        try:
            row, samples = workers[v].call("finish")
        except (WorkerGone, RuntimeError) as exc:
            done.append(_lost(cell, v, exc, workers, gone))
            continue
        row.update(timed_runs=len(figures[v]), timed_s=round(timed[v], 3),
                   sampling_stop=stops[v], **machine)
        _intervals(row, samples, job.seed)
        done.append(CellResult(cell, row, samples))
    done.sort(key=lambda r: r.cell.index)
    yield from done


def _lost(cell: Cell, variant: str, exc: BaseException, workers: dict[str, WorkerHandle],
          gone: dict[str, str]) -> CellResult:
    if isinstance(exc, WorkerGone):
        gone[variant] = str(exc)
        workers.pop(variant, None)
    else:
        record_traceback()
    return failed_row(cell, str(exc))


def _intervals(row: dict[str, Any], samples: dict[str, Any], seed: int) -> None:
    """95% bootstrap interval of the median over runs, for TPOT and decode tokens/s."""
    runs = samples.get("runs", {})
    for name, col in (("tpot_ms", "tpot_ms_p50"), ("decode_tokens_per_s",
                                                   "decode_tokens_per_s")):
        values = [v for v in runs.get(name, []) if v is not None and math.isfinite(v)]
        if values:
            _, lo, hi = bootstrap_median(values, seed=seed)
            if lo is not None and hi is not None:
                row[f"{col}_ci_low"], row[f"{col}_ci_high"] = lo, hi
