"""One cell: a variant serving one workload. Plain data in, one row (and raw samples) out.

`run_cell` is all an executor calls, so the same cell runs unchanged in a local subprocess or
on a remote worker.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UserError
from .models import ModelRef
from .schema import empty_row
from .workload import StaticBatch


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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        w = self.workload
        return (f"{self.variant} bs={w.get('batch_size')} prompt={w.get('prompt_tokens')} "
                f"new={w.get('new_tokens')}")


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def identity_row(cell: Cell) -> dict[str, Any]:
    row = empty_row()
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


def _median(values: list[float]) -> float:
    from .stats import Stats

    return Stats.of(values).p50


def _measure(cell: Cell, row: dict[str, Any], samples: dict[str, Any]) -> None:
    import torch

    from .backends import backend_class
    from .env import environment
    from .memory import peak_device_mb, peak_rss_mb, reset_device_peak, rss_mb
    from .models import load_tokenizer
    from .plugin import build_settings, parse_variant
    from .prompts import prompt_batch
    from .roofline import bytes_per_decode_step
    from .stats import Stats
    from .timing import clock_for

    torch.set_num_threads(cell.threads)
    row.update(environment(cell.device, cell.threads))
    row["bandwidth_gb_per_s"] = round(cell.bandwidth_gb_per_s, 2)
    workload = StaticBatch.from_dict(cell.workload)
    ref = ModelRef(**cell.model)
    workload.validate(ref.max_context)

    settings, unavailable = build_settings(parse_variant(cell.variant), cell.device)
    row.update(backend=settings.backend, dtype=settings.dtype,
               attn_implementation=settings.attn_implementation, kv_cache=settings.kv_cache)
    if unavailable is not None:
        row.update(status="skipped", reason=unavailable)
        return

    row["rss_before_load_mb"] = round(rss_mb(), 1)
    reset_device_peak(cell.device)
    backend = backend_class(settings.backend)(ref, settings)
    facts = backend.facts
    row["weight_mb"] = round(facts.weight_bytes / 2**20, 2)
    row["load_s"] = round(facts.load_s, 3)

    tokenizer = load_tokenizer(ref)
    prompts = prompt_batch(workload.batch_size, workload.prompt_tokens, ref.vocab_size,
                           tokenizer, seed=cell.seed)  # [B, P]
    clock = clock_for(cell.device)
    runs = []
    first_call_ms = None
    with backend.context():
        for i in range(workload.warmup_runs):
            warm = backend.run_batch(prompts, workload.warmup_tokens, clock)
            if i == 0:
                first_call_ms = warm.ttft_s * 1e3  # cold: lazy init, allocator, first kernels
        for _ in range(workload.repeats):
            runs.append(backend.run_batch(prompts, workload.new_tokens, clock))
    if first_call_ms is None:
        first_call_ms = runs[0].ttft_s * 1e3

    b, p, n = workload.batch_size, workload.prompt_tokens, workload.new_tokens
    ttft = [r.ttft_s * 1e3 for r in runs]
    e2e = [r.e2e_s * 1e3 for r in runs]
    itl = [x * 1e3 for r in runs for x in r.itl_s]
    row.update(Stats.of(ttft).columns("ttft_ms"))
    row.update(Stats.of(e2e).columns("e2e_ms"))
    if n > 1:
        tpot = [(r.e2e_s - r.ttft_s) * 1e3 / (n - 1) for r in runs]
        row.update(Stats.of(tpot).columns("tpot_ms"))
        row.update(Stats.of(itl).columns("itl_ms"))
        row["decode_tokens_per_s"] = _median([b * (n - 1) / (r.e2e_s - r.ttft_s) for r in runs])
        step_bytes = bytes_per_decode_step(facts.weight_bytes, facts.kv_bytes_per_token, b, p, n)
        achieved = step_bytes / (row["tpot_ms_p50"] / 1e3) / 1e9
        row["bytes_per_decode_step_mb"] = round(step_bytes / 2**20, 2)
        row["achieved_gb_per_s"] = round(achieved, 2)
        if cell.bandwidth_gb_per_s > 0:
            row["roofline_pct"] = round(100.0 * achieved / cell.bandwidth_gb_per_s, 1)
    row["output_tokens_per_s"] = _median([b * n / r.e2e_s for r in runs])
    row["prefill_tokens_per_s"] = _median([b * p / r.ttft_s for r in runs])
    row["requests_per_s"] = _median([b / r.e2e_s for r in runs])
    row["first_call_ms"] = round(first_call_ms, 3)
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    device_peak = peak_device_mb(cell.device)
    row["peak_device_mem_mb"] = "" if device_peak is None else round(device_peak, 1)
    row["notes"] = "; ".join(settings.notes)
    row["status"] = "ok"

    samples["ttft_ms"] = ttft
    samples["e2e_ms"] = e2e
    samples["itl_ms"] = [[x * 1e3 for x in r.itl_s] for r in runs]
    samples["tokens"] = runs[0].tokens.tolist()  # [B, N] greedy ids of the first timed run
    samples["warmup_runs"] = workload.warmup_runs


__all__ = ["Cell", "run_cell", "UserError"]
