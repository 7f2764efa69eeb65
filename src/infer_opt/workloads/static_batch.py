"""Measuring a static batch: warm-up, timed runs, statistics, throughput and roofline."""

from __future__ import annotations

from typing import Any

from infer_opt.core.prompts import prompt_batch
from infer_opt.core.roofline import bytes_per_decode_step
from infer_opt.core.stats import Stats
from infer_opt.core.timing import clock_for


def _median(values: list[float]) -> float:
    return Stats.of(values).p50


def measure_static_batch(workload: Any, ctx: Any, row: dict[str, Any],
                         samples: dict[str, Any]) -> None:
    cell, backend = ctx.cell, ctx.backend
    facts = backend.facts
    b, p, n = workload.batch_size, workload.prompt_tokens, workload.new_tokens
    prompts = prompt_batch(b, p, ctx.ref.vocab_size, ctx.tokenizer, seed=cell.seed)  # [B, P]
    clock = clock_for(cell.device)
    runs = []
    first_call_ms = None
    with backend.context():
        # A plugin whose cost depends on shapes (compile) asks for warm-ups of full length.
        warm_n = n if ctx.settings.options.get("warmup_full_length") else workload.warmup_tokens
        for i in range(workload.warmup_runs):
            warm = backend.run_batch(prompts, warm_n, clock)
            if i == 0:
                first_call_ms = warm.ttft_s * 1e3  # cold: lazy init, allocator, first kernels
        for _ in range(workload.repeats):
            runs.append(backend.run_batch(prompts, n, clock))
    if first_call_ms is None:
        first_call_ms = runs[0].ttft_s * 1e3

    ttft = [r.ttft_s * 1e3 for r in runs]
    e2e = [r.e2e_s * 1e3 for r in runs]
    row.update(Stats.of(ttft).columns("ttft_ms"))
    row.update(Stats.of(e2e).columns("e2e_ms"))
    if n > 1:
        itl = [x * 1e3 for r in runs for x in r.itl_s]
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

    samples["ttft_ms"] = ttft
    samples["e2e_ms"] = e2e
    samples["itl_ms"] = [[x * 1e3 for x in r.itl_s] for r in runs]
    samples["tokens"] = runs[0].tokens.tolist()  # [B, N] greedy ids of the first timed run
    samples["warmup_runs"] = workload.warmup_runs
