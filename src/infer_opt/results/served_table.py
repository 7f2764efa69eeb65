"""The "Served vs in-process" section of the results table: the serving tax.

Each ok row of a served variant (engines/http) is paired with its in-process twin of the same
workload in the same run: `served[server=own,...]+kv-cache+sdpa` with `kv-cache+sdpa`,
`served[server=llamacpp]` with `llamacpp`, `served[server=vllm]` with `vllm` (an external
endpoint has no twin). Both were measured in the same interleaved rounds, so the ratio
served / in-process is taken per round (core/stats.paired_ratios: what a round did to the
machine cancels) and summarised as the median with a 95% bootstrap interval over rounds. For
online rows a round's value is the statistic over that run's requests. TTFT and TPOT ratios
above 1 and throughput ratios below 1 are what serving costs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from infer_opt.format.io import parse_number
from infer_opt.format.samples import metric_samples, same_rounds, statistic

TWINS = {"llamacpp": "llamacpp", "vllm": "vllm"}
# Columns a served row and its twin must share to be the same workload.
SAME = ("model", "group", "workload", "batch_size", "prompt_tokens", "new_tokens", "arrival",
        "arrival_rate_per_s", "concurrency", "num_requests", "prompts", "prefix_tokens",
        "prefix_reuse")
MIN_ROUNDS = 2


def twin_variant(variant: str) -> str | None:
    """The in-process variant a served one is measured against, or None (not served, or an
    external endpoint)."""
    from infer_opt.core.errors import UserError
    from infer_opt.core.stack import split_variant

    try:
        parts = split_variant(variant)
    except UserError:
        return None
    raws = [x.strip() for x in variant.split("+")]
    served = [i for i, (name, _) in enumerate(parts) if name == "served"]
    if not served:
        return None
    server = str(parts[served[0]][1].get("server", "own"))
    if server == "own":
        engine = str(parts[served[0]][1].get("engine", "torch"))
        rest = [raw for i, raw in enumerate(raws) if i != served[0]]
        if engine != "torch":
            rest = [engine, *rest]
        return "+".join(rest) or "baseline"
    return TWINS.get(server)


def load_of(r: dict[str, str]) -> str:
    """What a row's load is: its batch size, its arrival rate, or its closed-loop clients."""
    if r.get("batch_size"):
        return r["batch_size"]
    if r.get("concurrency"):
        return f"{r['concurrency']} clients"
    return r.get("arrival_rate_per_s", "")


def _per_round(column: str, s: dict[str, Any] | None) -> tuple[list[float], list[int]] | None:
    ms = metric_samples(column, s)
    if ms is None or ms.rounds is None:
        return None
    by: dict[int, list[float]] = defaultdict(list)
    for value, rnd in zip(ms.unit_values(), ms.rounds):
        by[rnd].append(value)
    rounds = sorted(by)
    return [statistic(by[r], ms.stat) for r in rounds], rounds


def served_ratio(column: str, served: dict[str, Any] | None, twin: dict[str, Any] | None
                 ) -> tuple[float, float | None, float | None] | None:
    """Median per-round served / in-process ratio of `column` and its 95% interval, or None
    with fewer than MIN_ROUNDS shared rounds."""
    from infer_opt.core.stats import bootstrap_paired_ratio, paired_ratios

    if not same_rounds(served, twin):
        return None  # timed by different jobs: their round indices are not the same rounds
    a, b = _per_round(column, twin), _per_round(column, served)
    if a is None or b is None or len(paired_ratios(a[0], a[1], b[0], b[1])) < MIN_ROUNDS:
        return None
    return bootstrap_paired_ratio(a[0], a[1], b[0], b[1])


def _fmt(r: tuple[float, float | None, float | None] | None) -> str:
    if r is None:
        return "insufficient samples"
    point, lo, hi = r
    ci = "" if lo is None or hi is None else f" [{lo:.2f}, {hi:.2f}]"
    return f"{point:.2f}{ci}"


def render_served(rows: list[dict[str, str]], samples: dict[str, Any]) -> str:
    """Markdown for the served rows that have an ok twin ('' when there are none)."""
    lines: list[str] = []
    for r in rows:
        twin_name = twin_variant(r.get("variant", ""))
        if r.get("status") != "ok" or twin_name is None:
            continue
        twin = next((t for t in rows if t.get("variant") == twin_name and t.get("status") == "ok"
                     and all(t.get(k) == r.get(k) for k in SAME)), None)
        if twin is None:
            continue
        throughput = ("output_tokens_per_s" if r.get("workload") == "online"
                      else "decode_tokens_per_s")
        s_r, s_t = samples.get(r["cell_index"]), samples.get(twin["cell_index"])
        errors = parse_number(r.get("errors"))
        lines.append("| " + " | ".join([
            r["variant"], twin_name, r.get("workload", ""), load_of(r),
            _fmt(served_ratio("ttft_ms_p50", s_r, s_t)),
            _fmt(served_ratio("tpot_ms_p50", s_r, s_t)),
            _fmt(served_ratio(throughput, s_r, s_t)),
            "" if errors is None else f"{errors:g}",
        ]) + " |")
    if not lines:
        return ""
    head = ["served variant", "in-process twin", "workload", "bs / rate / clients", "TTFT ratio",
            "TPOT ratio", "throughput ratio", "errors"]
    return "\n".join([
        "## Served vs in-process (served / in-process per interleaved round: median [95% CI])",
        "", "TTFT and TPOT above 1 and throughput below 1 are the serving tax.", "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines]) + "\n"
