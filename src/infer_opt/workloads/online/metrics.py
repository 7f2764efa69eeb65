"""Per-request latencies, SLO checks and goodput, computed from raw request timestamps.

Per request (times since the run started, the request arriving at `arrival_s`):
  queue_ms = admitted - arrival         (waited before its prefill started)
  ttft_ms  = first token - arrival      (includes the queue wait, as a client sees it)
  tpot_ms  = (last token - first token) / (new_tokens - 1)   (none for a 1-token answer)
  e2e_ms   = last token - arrival
Per run, over `duration_s` = first arrival (t = 0) to the last token:
  output_tokens_per_s, requests_per_s, and goodput_requests_per_s = requests that met every
  SLO given / duration_s (DistServe, Zhong et al. 2024; vLLM's benchmark has the same metric);
  a row keeps the median over its timed runs, and the latencies of all their requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infer_opt.core.stats import Stats


@dataclass(frozen=True)
class RequestTimes:
    arrival_s: float
    admitted_s: float
    stamps_s: list[float]  # when each output token was ready

    @property
    def queue_ms(self) -> float:
        return (self.admitted_s - self.arrival_s) * 1e3

    @property
    def ttft_ms(self) -> float:
        return (self.stamps_s[0] - self.arrival_s) * 1e3

    @property
    def e2e_ms(self) -> float:
        return (self.stamps_s[-1] - self.arrival_s) * 1e3

    @property
    def tpot_ms(self) -> float | None:
        n = len(self.stamps_s)
        return None if n < 2 else (self.stamps_s[-1] - self.stamps_s[0]) * 1e3 / (n - 1)

    @property
    def itl_ms(self) -> list[float]:
        return [(b - a) * 1e3 for a, b in zip(self.stamps_s, self.stamps_s[1:])]

    def value(self, metric: str) -> float | None:
        return getattr(self, metric)


def meets_slo(req: RequestTimes, slos_ms: dict[str, float]) -> bool:
    """Every SLO given holds (a missing TPOT, for a 1-token answer, cannot violate one)."""
    for metric, bound in slos_ms.items():
        v = req.value(metric)
        if v is not None and v > bound:
            return False
    return True


THROUGHPUT = ("duration_s", "output_tokens_per_s", "requests_per_s", "goodput_requests_per_s")


def run_throughput(reqs: list[RequestTimes], slos_ms: dict[str, float]) -> dict[str, float]:
    """What one served run achieved, over its duration (t = 0 to its last token)."""
    duration_s = max(r.stamps_s[-1] for r in reqs)
    n_out = sum(len(r.stamps_s) for r in reqs)
    good = sum(meets_slo(r, slos_ms) for r in reqs)
    return {"duration_s": duration_s, "output_tokens_per_s": n_out / duration_s,
            "requests_per_s": len(reqs) / duration_s, "goodput_requests_per_s": good / duration_s}


def run_columns(runs: list[list[RequestTimes]], slos_ms: dict[str, float], target_pct: float
                ) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Row columns for the timed runs of one online cell, and the per-run throughputs.

    Latencies pool the requests of every run (a percentile over requests); throughputs are
    per run (each run serves the whole load), and the row keeps their median.
    """
    reqs = [r for run in runs for r in run]
    cols: dict[str, Any] = {}
    cols.update(Stats.of([r.queue_ms for r in reqs]).columns("queue_ms"))
    cols.update(Stats.of([r.ttft_ms for r in reqs]).columns("ttft_ms"))
    cols.update(Stats.of([r.e2e_ms for r in reqs]).columns("e2e_ms"))
    tpot = [t for r in reqs if (t := r.tpot_ms) is not None]
    if tpot:
        cols.update(Stats.of(tpot).columns("tpot_ms"))
    itl = [x for r in reqs for x in r.itl_ms]
    if itl:
        cols.update(Stats.of(itl).columns("itl_ms"))
    per_run = {k: [run_throughput(run, slos_ms)[k] for run in runs] for k in THROUGHPUT}
    cols.update({k: Stats.of(v).p50 for k, v in per_run.items()})
    met_pct = 100.0 * sum(meets_slo(r, slos_ms) for r in reqs) / len(reqs)
    cols.update(slo_met_pct=met_pct, meets_slo=(met_pct >= target_pct) if slos_ms else "")
    return cols, per_run
