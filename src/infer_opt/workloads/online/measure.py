"""Serving an online workload through the decode loop on a cell's engine; filling the row."""

from __future__ import annotations

import time
from typing import Any

from infer_opt.core import registry
from infer_opt.core.timing import HostClock
from infer_opt.engines import decode
from infer_opt.workloads.online.arrivals import arrival_times, lengths
from infer_opt.workloads.online.closed_loop import ClosedLoop
from infer_opt.workloads.online.metrics import RequestTimes, run_columns
from infer_opt.workloads.online.prompts import shared_prefix_prompts, text_prompts
from infer_opt.workloads.online.server import Request


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


class OnlineSession:
    """The online load on one loaded engine: every timed run serves the same seeded requests
    (arrival times, lengths, prompts) again from scratch."""

    def __init__(self, w: Any, ctx: Any) -> None:
        self.w, self.ctx = w, ctx
        self.engine = ctx.engine
        self.serve = registry.load("policy", w.policy)
        if self.engine.serves_requests:  # a server batches them itself (engines/http)
            if w.prefix_reuse:
                raise ValueError("prefix_reuse copies KV in-process; a served variant's prefix "
                                 "caching is its server's: use prefix_reuse = false")
            self.serve = _served
            ctx.settings.notes.append("requests sent over HTTP at their arrival times; the "
                                      "batching is the server's, not the policy column's")
        self.template, self.prefix_ids = build_requests(w, ctx.ref.vocab_size, ctx.tokenizer,
                                                        ctx.cell.seed)
        self.prefix: Any = None
        self.prefix_prefill_ms: float | None = None
        self.first_call_ms: float | None = None
        self.runs: list[list[Request]] = []
        self.steps: list[list[int]] = []
        self.rounds: list[int] = []

    def _fresh(self, arrive_at_once: bool = False, max_new: int | None = None) -> list[Request]:
        return [Request(id=r.id, arrival_s=0.0 if arrive_at_once else r.arrival_s,
                        prompt=r.prompt, prompt_len=r.prompt_len,
                        new_tokens=r.new_tokens if max_new is None else min(r.new_tokens, max_new))
                for r in self.template]

    def warm_up(self) -> None:
        w = self.w
        with self.engine.context():
            if w.prefix_reuse:
                # Computed once, before the first arrival, as a server with a warm prefix cache.
                t0 = time.perf_counter()
                self.prefix = decode.make_prefix(self.engine, self.prefix_ids)
                _ = self.prefix.kv[-1][0].sum().item()  # wait for the device
                self.prefix_prefill_ms = (time.perf_counter() - t0) * 1e3
            # Untimed: the same policy and shapes on a few requests arriving at once.
            n_warm = min(w.warmup_requests, w.num_requests)
            if n_warm:
                warm = self._fresh(arrive_at_once=True, max_new=4)[:n_warm]
                self.serve(self.engine, warm, HostClock(), w, self.prefix)
                if warm[0].stamps_s:
                    self.first_call_ms = warm[0].stamps_s[0] * 1e3  # cold: first kernels
        self.ctx.settings.counters.clear()

    def _source(self, reqs: list[Request]) -> Any:
        """What the policy reads requests from: the seeded list (arrival times known up front),
        or N closed-loop clients that send the next request when one ends."""
        if self.w.arrival != "concurrency":
            return reqs
        return ClosedLoop(reqs, self.w.concurrency, whole=self.engine.serves_requests)

    def run_once(self, round_index: int) -> float:
        reqs = self._fresh()
        with self.engine.context():
            clock = HostClock()
            clock.start()
            stats = self.serve(self.engine, self._source(reqs), clock, self.w, self.prefix)
        self.runs.append(reqs)
        self.steps.append(stats.step_batch_sizes)
        self.rounds.append(round_index)
        ok = [r for r in reqs if r.error is None]
        if not ok:
            raise RuntimeError(f"all {len(reqs)} requests failed: {reqs[0].error}")
        # The sampling rule's figure: mean TPOT over requests (e2e when all answers are 1 token).
        tpot = [t for r in ok if (t := times(r).tpot_ms) is not None]
        if not tpot:
            tpot = [times(r).e2e_ms for r in ok]
        return sum(tpot) / len(tpot)

    def finish(self, row: dict[str, Any], samples: dict[str, Any]) -> None:
        w = self.w
        # Failed requests (served over HTTP) are not timed; the engine's `errors` and
        # `error_rate_pct` columns count them and the note says so.
        cols, per_run = run_columns([[times(r) for r in run if r.error is None]
                                     for run in self.runs], w.slos_ms(), w.slo_target_pct)
        failed = [r for run in self.runs for r in run if r.error is not None]
        if failed:
            self.ctx.settings.notes.append(f"{len(failed)} requests failed and are not in the "
                                           f"latency statistics (first: {failed[0].error})")
        row.update(cols)
        all_steps = [s for run in self.steps for s in run]
        if all_steps:  # none when a server batched the requests (engines/http)
            row["mean_batch_size"] = sum(all_steps) / len(all_steps)
        if self.first_call_ms is not None:
            row["first_call_ms"] = self.first_call_ms
        if self.prefix_prefill_ms is not None:
            row["prefix_prefill_ms"] = self.prefix_prefill_ms
            self.ctx.settings.notes.append("shared-prefix KV computed once before the first "
                                           "arrival (prefix_prefill_ms) and copied into every "
                                           "request")
        samples["runs"] = {"round": list(self.rounds), **per_run}
        samples["requests"] = [
            {"round": rnd, "id": r.id, "arrival_s": r.arrival_s, "admitted_s": r.admitted_s,
             "prompt_tokens": r.prompt_len, "new_tokens": r.new_tokens,
             "queue_ms": t.queue_ms, "ttft_ms": t.ttft_ms, "tpot_ms": t.tpot_ms,
             "e2e_ms": t.e2e_ms, "itl_ms": t.itl_ms, "stamps_s": r.stamps_s}
            if r.error is None else
            {"round": rnd, "id": r.id, "arrival_s": r.arrival_s, "error": r.error,
             "prompt_tokens": r.prompt_len, "new_tokens": r.new_tokens,
             "stamps_s": r.stamps_s}
            for rnd, run in zip(self.rounds, self.runs) for r in run for t in [times(r)]]
        samples["tokens"] = [r.tokens for r in self.runs[0]]  # greedy ids per request, by id
        samples["step_batch_sizes"] = self.steps[0]
        samples["warmup"] = {"requests": min(w.warmup_requests, w.num_requests)}


def _served(engine: Any, requests: list[Request], clock: HostClock, opts: Any,
            prefix: Any = None) -> Any:
    """The policy slot for an engine that serves requests itself (engines/http)."""
    from infer_opt.workloads.online.server import ServerCounters, source_of

    engine.serve_requests(source_of(requests), clock, opts)
    return ServerCounters(step_batch_sizes=[])


def times(r: Request) -> RequestTimes:
    return RequestTimes(r.arrival_s, r.admitted_s if r.admitted_s is not None else r.arrival_s,
                        r.stamps_s)


def online_row_columns(w: Any) -> dict[str, Any]:
    """The load's own columns, filled in every row of the workload (ok or not)."""
    open_loop = w.arrival not in ("offline", "concurrency")  # only then is there a rate
    return dict(policy=w.policy, arrival=w.arrival,
                arrival_rate_per_s=w.arrival_rate_per_s if open_loop else "",
                concurrency=w.concurrency or "",
                burstiness=w.burstiness if w.arrival == "gamma" else "",
                num_requests=w.num_requests, max_batch_size=w.batch_cap,
                max_wait_ms=w.max_wait_ms if w.policy == "dynamic" else "",
                prompts=w.prompts, prefix_tokens=w.prefix_tokens or "",
                prefix_reuse=w.prefix_reuse, ttft_slo_ms=w.ttft_slo_ms or "",
                tpot_slo_ms=w.tpot_slo_ms or "", e2e_slo_ms=w.e2e_slo_ms or "",
                slo_target_pct=w.slo_target_pct if w.slos_ms() else "")
