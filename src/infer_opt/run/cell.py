"""One cell: a variant serving one workload. Plain data in, one row (and raw samples) out.

`run_cell` is all an executor calls, so the same cell runs unchanged in a local subprocess or
on a remote worker.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from infer_opt.core.models import ModelRef
from infer_opt.core.schema import empty_row
from infer_opt.workloads.base import workload_from_dict


@dataclass
class Cell:
    run_id: str
    suite: str
    index: int
    model: dict[str, Any]  # ModelRef as a dict
    variant: str
    workload: dict[str, Any]
    device: str
    threads: int
    bandwidth_gb_per_s: float
    seed: int = 0
    # Metric columns declared by the run's plugins and engines (schema.run_columns).
    metric_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        w = self.workload
        if w.get("kind") == "online":
            rate = "" if w.get("arrival") == "offline" else f" rate={w.get('arrival_rate_per_s')}/s"
            return (f"{self.variant} online {w.get('policy')} {w.get('arrival')}{rate} "
                    f"n={w.get('num_requests')}"
                    + (" prefix-reuse" if w.get("prefix_reuse") else ""))
        return (f"{self.variant} bs={w.get('batch_size')} prompt={w.get('prompt_tokens')} "
                f"new={w.get('new_tokens')}")


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def identity_row(cell: Cell) -> dict[str, Any]:
    row = empty_row(cell.metric_columns)
    w = cell.workload
    row.update(run_id=cell.run_id, cell_index=cell.index, suite=cell.suite,
               model=cell.model["name"], variant=cell.variant, device=cell.device,
               workload=w.get("kind", "static-batch"), batch_size=w.get("batch_size", ""),
               prompt_tokens=w.get("prompt_tokens", ""), new_tokens=w.get("new_tokens", ""),
               repeats=w.get("repeats", ""), warmup_runs=w.get("warmup_runs", ""),
               torch_threads=cell.threads)
    return row


def run_cell(cell_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Never raises for a bad variant or a broken library: the row says what happened."""
    cell = Cell(**cell_dict)
    started = time.perf_counter()
    row = identity_row(cell)
    samples: dict[str, Any] = {"run_id": cell.run_id, "cell_index": cell.index,
                               "variant": cell.variant, "workload": cell.workload}
    try:
        _measure(cell, row, samples)
    except Exception as exc:  # the run goes on; the row carries the reason
        traceback.print_exc()
        row.update(status="failed", reason=one_line(exc))
    row["cell_s"] = round(time.perf_counter() - started, 3)
    return row, samples


@dataclass
class CellContext:
    """What a workload's `measure` gets: the cell, its model, settings and loaded engine."""

    cell: Cell
    ref: ModelRef
    settings: Any
    engine: Any
    tokenizer: Any


def _measure(cell: Cell, row: dict[str, Any], samples: dict[str, Any]) -> None:
    import torch

    from infer_opt.core.env import environment
    from infer_opt.core.memory import (
        peak_device_mb,
        peak_rss_mb,
        reset_device_peak,
        rss_mb,
    )
    from infer_opt.core.models import load_tokenizer
    from infer_opt.core.stack import build_stack

    torch.set_num_threads(cell.threads)
    row.update(environment(cell.device, cell.threads))
    row["bandwidth_gb_per_s"] = round(cell.bandwidth_gb_per_s, 2)
    workload = workload_from_dict(cell.workload)
    ref = ModelRef(**cell.model)
    workload.validate(ref.max_context)

    stack = build_stack(cell.variant, cell.device)  # validated by the plan already
    settings = stack.settings
    row.update(engine=settings.engine, dtype=settings.dtype,
               attn_implementation=settings.attn_implementation, kv_cache=settings.kv_cache)
    if stack.unavailable is not None:
        row.update(status="skipped", reason=stack.unavailable)
        return

    row["rss_before_load_mb"] = round(rss_mb(), 1)
    reset_device_peak(cell.device)
    engine = stack.engine(ref, settings)
    row["weight_mb"] = round(engine.facts.weight_bytes / 2**20, 2)
    row["load_s"] = round(engine.facts.load_s, 3)
    ctx = CellContext(cell=cell, ref=ref, settings=settings, engine=engine,
                      tokenizer=load_tokenizer(ref))
    workload.measure(ctx, row, samples)
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    device_peak = peak_device_mb(cell.device)
    row["peak_device_mem_mb"] = "" if device_peak is None else round(device_peak, 1)
    declared = {m.name for m in stack.metrics}
    for name, value in settings.metrics.items():  # measured by plugins (compile_s, ...)
        if name in declared:
            row[name] = round(value, 6)
        else:
            settings.notes.append(f"metric {name!r} not declared by any plugin of the stack: "
                                  "not recorded")
    # After the timed runs and memory readings: fidelity loads the baseline once per model.
    if not row["status"]:  # a workload that skipped itself has nothing to score
        try:
            from infer_opt.run.fidelity import (
                keep_fidelity,
                measure_fidelity,
                reuse_fidelity,
            )

            measured_in = reuse_fidelity(cell, row)
            if measured_in is None:
                measure_fidelity(ctx, row)
                keep_fidelity(cell, row)
            else:
                settings.notes.append(f"fidelity: measured once per variant, in cell {measured_in}")
        except Exception as exc:  # the timings stand; the row says why fidelity is missing
            traceback.print_exc()
            settings.notes.append(f"fidelity failed: {one_line(exc)}")
    row["notes"] = "; ".join(settings.notes)
    row["status"] = row["status"] or "ok"  # a workload may have marked the row skipped

