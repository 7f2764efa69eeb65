"""One worker process per variant: it loads the stack's engine once and serves all the
variant's workloads in a group, one timed run at a time, when the coordinator (run/rounds.py)
asks. Plain messages over a pipe:

    ("prepare", cell_dict)  build the workload's session and run its warm-up
    ("run", round_index)    one timed run -> (figure for the sampling rule, seconds)
    ("finish",)             statistics, memory, plugin metrics, fidelity -> (row, samples)
    ("exit",)

Every reply is ("ok", result) or ("error", one-line reason); a Python exception fails that
cell only (the worker goes on with the next workload), a crash or hang fails the variant's
remaining cells, never another variant's.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from infer_opt.core.models import ModelRef
from infer_opt.run.cell import Cell, identity_row, one_line
from infer_opt.run.faults import record_traceback

_CTX: Any = None


def process_context() -> Any:
    """Where worker processes come from: a forkserver that preloaded torch and transformers
    (saves ~10 s of imports per worker), or spawn where there is no forkserver."""
    global _CTX
    if _CTX is None:
        if "forkserver" in mp.get_all_start_methods():
            _CTX = mp.get_context("forkserver")
            _CTX.set_forkserver_preload(["infer_opt.run.preload"])
        else:
            _CTX = mp.get_context("spawn")
    return _CTX


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent (the forkserver, which exits with the run)
    dies: a killed run or a cancelled Ray task leaves no orphan keeping a core busy."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class CellContext:
    """What a workload's session gets: the cell, its model, settings and loaded engine."""

    cell: Cell
    ref: ModelRef
    settings: Any
    engine: Any
    tokenizer: Any


class VariantWorker:
    """The loaded engine of one variant, and the workload being measured on it."""

    def __init__(self, first: Cell) -> None:
        import torch

        from infer_opt.core.env import environment
        from infer_opt.core.memory import reset_device_peak, rss_mb
        from infer_opt.core.models import load_tokenizer
        from infer_opt.core.quiet import recorded
        from infer_opt.core.stack import build_stack

        torch.set_num_threads(first.threads)
        self.ref = ModelRef(**first.model)
        # Validated by the plan already.
        self.stack = build_stack(first.variant, first.device, first.model["name"],
                                 first.engine_defaults)
        self.settings = self.stack.settings
        self.env = environment(first.device, first.threads)
        self.rss_before_load_mb = round(rss_mb(), 1)
        reset_device_peak(first.device)
        with recorded(self.settings.notes):  # library warnings: to the notes, not the terminal
            self.engine = self.stack.engine(self.ref, self.settings)
            self.tokenizer = load_tokenizer(self.ref)
        self.base_notes = list(self.settings.notes)  # the engine's and plugins' own remarks
        self.load_metrics = dict(self.settings.metrics)  # measured while loading (pruning)
        from infer_opt.core.energy import open_meter

        self.meter, self.no_meter_reason = open_meter(first.device)
        self.cell: Cell | None = None
        self.session: Any = None
        self.started = 0.0

    def prepare(self, cell: Cell) -> None:
        from infer_opt.core.memory import reset_device_peak, reset_peak_rss
        from infer_opt.workloads.base import workload_from_dict

        self.cell, self.session, self.started = cell, None, time.perf_counter()
        self.settings.notes[:] = self.base_notes  # a workload's remarks stay in its own row
        # Plugin metrics count this workload (warm-up included), on top of what loading found.
        self.settings.metrics.clear()
        self.settings.metrics.update(self.load_metrics)
        workload = workload_from_dict(cell.workload)
        workload.validate(self.ref.max_context)
        reset_peak_rss()
        reset_device_peak(cell.device)
        ctx = CellContext(cell=cell, ref=self.ref, settings=self.settings, engine=self.engine,
                          tokenizer=self.tokenizer)
        session = workload.session(ctx)
        session.warm_up()
        self.session, self.ctx = session, ctx
        from infer_opt.core.energy import EnergyLog

        self.energy, self.run_s = EnergyLog(self.meter, self.no_meter_reason), []

    def run(self, round_index: int) -> tuple[float, float]:
        from infer_opt.core.timing import synchronize

        device = self.ctx.cell.device
        synchronize(device)  # the energy counter starts with nothing else queued
        self.energy.start()
        t0 = time.perf_counter()
        figure = self.session.run_once(round_index)
        seconds = time.perf_counter() - t0
        synchronize(device)  # ... and stops after the run's last kernel
        self.energy.stop()
        self.run_s.append(seconds)
        return figure, seconds

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from infer_opt.core.memory import peak_device_mb, peak_rss_mb

        cell, settings = self.cell, self.settings
        assert cell is not None and self.session is not None
        row = identity_row(cell)
        row.update(self.env)
        row.update(engine=settings.engine, dtype=settings.dtype,
                   attn_implementation=settings.attn_implementation, kv_cache=settings.kv_cache,
                   bandwidth_gb_per_s=round(cell.bandwidth_gb_per_s, 2),
                   rss_before_load_mb=self.rss_before_load_mb,
                   weight_mb=round(self.engine.facts.weight_bytes / 2**20, 2),
                   load_s=round(self.engine.facts.load_s, 3))
        samples = {"run_id": cell.run_id, "cell_index": cell.index, "variant": cell.variant,
                   "workload": cell.workload, "job": cell.job}
        self.session.finish(row, samples)
        from infer_opt.core.energy import output_tokens_per_run

        self.energy.finish(output_tokens_per_run(cell.workload, samples), self.run_s, row,
                           samples)
        row["peak_rss_mb"] = round(peak_rss_mb(), 1)
        device_peak = peak_device_mb(cell.device)
        row["peak_device_mem_mb"] = "" if device_peak is None else round(device_peak, 1)
        declared = {m.name for m in self.stack.metrics}
        for name, value in settings.metrics.items():  # measured by plugins (compile_s, ...)
            if name in declared:
                row[name] = round(value, 6)
            else:
                settings.notes.append(f"metric {name!r} is not declared by the stack's plugins: "
                                      "not recorded")
        self._fidelity(cell, row)
        row["notes"] = "; ".join(settings.notes)
        row["status"] = "ok"
        row["cell_s"] = round(time.perf_counter() - self.started, 3)
        return row, samples

    def _fidelity(self, cell: Cell, row: dict[str, Any]) -> None:
        """After the timed runs and memory readings; once per variant per run (the run-level
        store shares it between workers of the same variant in other groups)."""
        from infer_opt.run.fidelity import (
            keep_fidelity,
            measure_fidelity,
            reuse_fidelity,
        )

        try:
            measured_in = reuse_fidelity(cell, row)
            if measured_in is None:
                measure_fidelity(self.ctx, row)
                keep_fidelity(cell, row)
            else:
                self.settings.notes.append(f"fidelity: measured once per variant, in cell "
                                           f"{measured_in}")
        except NotImplementedError as exc:  # an engine that cannot score (served, vLLM)
            self.settings.notes.append(f"fidelity not scored: {one_line(exc)}")
        except Exception as exc:  # the timings stand; the row says why fidelity is missing
            record_traceback()
            self.settings.notes.append(f"fidelity failed: {one_line(exc)}")


def worker_main(conn: Any, first_cell: dict[str, Any], env: dict[str, str | None]) -> None:
    """The worker process: load, then serve requests from the coordinator until "exit"."""
    import os

    from infer_opt.core.quiet import silence_warnings
    from infer_opt.run.faults import ignore_interrupts

    ignore_interrupts()  # Ctrl-C reaches the whole process group; the coordinator ends us
    die_with_parent()
    for key, value in env.items():  # e.g. CUDA_VISIBLE_DEVICES of a Ray task, before CUDA init
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        worker = VariantWorker(Cell(**first_cell))
    except Exception as exc:
        record_traceback()
        conn.send(("error", one_line(exc)))
        return
    conn.send(("ok", None))
    silence_warnings()
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the coordinator is gone
            return
        op = msg[0]
        if op == "exit":
            return
        try:
            if op == "prepare":
                result: Any = worker.prepare(Cell(**msg[1]))
            elif op == "run":
                result = worker.run(msg[1])
            elif op == "finish":
                result = worker.finish()
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # this cell fails; the worker serves the next one
            record_traceback()
            conn.send(("error", one_line(exc)))
        else:
            conn.send(("ok", result))


def main(argv: list[str] | None = None) -> None:
    """`python -m infer_opt.run.worker FD`: a worker in another environment's interpreter,
    talking to the coordinator over the inherited socket FD (run/rounds.WorkerHandle)."""
    from multiprocessing.connection import Connection

    from infer_opt.run.faults import ignore_interrupts

    ignore_interrupts()
    args = sys.argv[1:] if argv is None else argv
    conn = Connection(int(args[0]))
    first_cell, env = conn.recv()
    worker_main(conn, first_cell, env)


if __name__ == "__main__":
    main()
