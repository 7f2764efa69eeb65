"""Serving an online workload through the decode loop on the cell's engine; filling the row."""

from __future__ import annotations

import time
from typing import Any

from infer_opt.core import registry
from infer_opt.engines import decode
from infer_opt.workloads.online.arrivals import arrival_times, lengths
from infer_opt.workloads.online.metrics import RequestTimes, run_columns
from infer_opt.workloads.online.prompts import shared_prefix_prompts, text_prompts
from infer_opt.workloads.online.server import Request, ServerClock


def build_requests(w: Any, vocab_size: int, tokenizer: Any, seed: int
                   ) -> tuple[list[Request], list[int]]:
    """Seeded requests (prompt = what to prefill without reuse) and the shared prefix ids."""
    n = w.num_requests
    p_len = lengths(n, w.prompt_tokens, w.lengths, w.length_spread, seed, "prompt")
    n_new = lengths(n, w.new_tokens, w.lengths, w.length_spread, seed, "new")
    times = arrival_times(n, w.arrival, w.arrival_rate_per_s, w.burstiness, seed)
    prefix: list[int] = []
    if w.prompts == "shared-prefix":
        prefix, own = shared_prefix_prompts(w.prefix_tokens, p_len, vocab_size, tokenizer, seed)
    else:
        own = text_prompts(p_len, vocab_size, tokenizer, seed)
    reqs = [Request(id=i, arrival_s=t, prompt=(own[i] if w.prefix_reuse else prefix + own[i]),
                    new_tokens=m, prompt_len=len(prefix) + len(own[i]))
            for i, (t, m) in enumerate(zip(times, n_new))]
    return reqs, prefix


def measure_online(w: Any, ctx: Any, row: dict[str, Any], samples: dict[str, Any]) -> None:
    row.update(policy=w.policy, arrival=w.arrival,
               arrival_rate_per_s="" if w.arrival == "offline" else w.arrival_rate_per_s,
               burstiness=w.burstiness if w.arrival == "gamma" else "",
               num_requests=w.num_requests, max_batch_size=w.batch_cap,
               max_wait_ms=w.max_wait_ms if w.policy == "dynamic" else "",
               prompts=w.prompts, prefix_tokens=w.prefix_tokens or "",
               prefix_reuse=w.prefix_reuse, ttft_slo_ms=w.ttft_slo_ms or "",
               tpot_slo_ms=w.tpot_slo_ms or "", e2e_slo_ms=w.e2e_slo_ms or "",
               slo_target_pct=w.slo_target_pct if w.slos_ms() else "")
    settings, tok = ctx.settings, ctx.tokenizer
    if w.prefix_reuse and settings.kv_cache == "none":
        row.update(status="skipped", reason="prefix reuse copies the prefix's KV cache into "
                                            "each request; this variant has none (add kv-cache)")
        return
    engine = ctx.engine
    serve = registry.load("policy", w.policy)
    reqs, prefix_ids = build_requests(w, ctx.ref.vocab_size, tok, ctx.cell.seed)

    with engine.context():
        prefix = None
        if w.prefix_reuse:
            # Computed once, before the first arrival, as a server with a warm prefix cache.
            t0 = time.perf_counter()
            prefix = decode.make_prefix(engine, prefix_ids)
            _ = prefix.kv[-1][0].sum().item()  # wait for the device
            row["prefix_prefill_ms"] = (time.perf_counter() - t0) * 1e3
            settings.notes.append("shared-prefix KV computed once before the first arrival "
                                  "(prefix_prefill_ms) and copied into every request")
        # Warm-up, untimed: the same policy and shapes on a few requests arriving at once.
        n_warm = min(w.warmup_requests, w.num_requests)
        if n_warm:
            warm = [Request(id=r.id, arrival_s=0.0, prompt=r.prompt, new_tokens=min(r.new_tokens, 4))
                    for r in reqs[:n_warm]]
            clock = ServerClock()
            serve(engine, warm, clock, w, prefix)
            row["first_call_ms"] = warm[0].stamps_s[0] * 1e3  # cold: first kernels, allocator
        clock = ServerClock()
        clock.start()
        stats = serve(engine, reqs, clock, w, prefix)

    times = [RequestTimes(r.arrival_s, r.admitted_s if r.admitted_s is not None else r.arrival_s,
                          r.stamps_s) for r in reqs]
    row.update(run_columns(times, w.slos_ms(), w.slo_target_pct))
    steps = stats.step_batch_sizes
    row["mean_batch_size"] = sum(steps) / len(steps)
    samples["requests"] = [
        {"id": r.id, "arrival_s": r.arrival_s, "admitted_s": r.admitted_s,
         "prompt_tokens": r.prompt_len, "new_tokens": r.new_tokens, "queue_ms": t.queue_ms,
         "ttft_ms": t.ttft_ms, "tpot_ms": t.tpot_ms, "e2e_ms": t.e2e_ms, "stamps_s": r.stamps_s}
        for r, t in zip(reqs, times)]
    samples["tokens"] = [r.tokens for r in reqs]  # greedy ids per request, by request id
    samples["step_batch_sizes"] = steps
    samples["warmup_requests"] = n_warm
