"""The online-load section of the results table.

One line per online row: throughput, latency percentiles and goodput; `tok/s vs seq` divides
output tokens/s by the sequential policy's row on the same variant and load; for shared-prefix
rows with reuse, `TTFT ratio` = TTFT p50 without reuse / with reuse on the same load, and
`tokens = no reuse` counts requests whose greedy tokens are identical in both rows.
"""

from __future__ import annotations

from typing import Any

from infer_opt.format.io import parse_number as _num
from infer_opt.results.markdown import table

ONLINE = "online"
# Columns that describe the load; rows equal on all of them served the same requests.
LOAD_KEYS = ("model", "variant", "arrival", "arrival_rate_per_s", "burstiness", "concurrency",
             "num_requests", "prompt_tokens", "new_tokens", "prompts", "prefix_tokens")


def busy_mark(row: dict[str, str]) -> str:
    """'busy' for a row measured on a busy machine (telemetry column machine_busy)."""
    return "busy" if row.get("machine_busy") == "True" else ""


def _f(v: Any, digits: int = 1) -> str:
    x = _num(v)
    return "" if x is None else f"{x:.{digits}f}"


def _same_load(a: dict[str, str], b: dict[str, str], *extra: str) -> bool:
    return all(a.get(k) == b.get(k) for k in LOAD_KEYS + extra)


def _find(rows: list[dict[str, str]], row: dict[str, str], extra: tuple[str, ...],
          **want: str) -> dict[str, str] | None:
    for r in rows:
        if r["status"] == "ok" and _same_load(r, row, *extra) and all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def render_online(rows: list[dict[str, str]], tokens: dict[str, Any]) -> str:
    """Markdown for the online rows ('' when there are none). tokens: cell_index -> ids."""
    online = [r for r in rows if r.get("workload") == ONLINE]
    if not online:
        return ""
    head = ["variant", "policy", "arrival", "rate/s", "concurrency", "n", "max bs",
            "prefix reuse", "status", "out tok/s", "tok/s vs seq", "req/s", "goodput req/s", "SLO met %", "queue p50 ms",
            "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms", "e2e p99 ms",
            "mean batch", "TTFT ratio (no reuse / reuse)", "tokens = no reuse", "machine",
            "reason / notes"]
    body: list[list[str]] = []
    for r in online:
        vs_seq = ttft_ratio = same = ""
        if r["status"] == "ok":
            seq = _find(online, r, ("prefix_reuse",), policy="sequential")
            if seq is not None and r["policy"] != "sequential":
                a, b = _num(r["output_tokens_per_s"]), _num(seq["output_tokens_per_s"])
                if a and b:
                    vs_seq = f"{a / b:.2f}x"
            if r.get("prefix_reuse") == "True":
                base = _find(online, r, ("policy", "max_batch_size"), prefix_reuse="False")
                if base is not None:
                    a, b = _num(base["ttft_ms_p50"]), _num(r["ttft_ms_p50"])
                    if a and b:
                        ttft_ratio = f"{a / b:.2f}x"
                    mine, theirs = tokens.get(r["cell_index"]), tokens.get(base["cell_index"])
                    if mine is not None and theirs is not None:
                        same = f"{sum(x == y for x, y in zip(mine, theirs))}/{len(mine)}"
        why = r.get("reason") or r.get("notes") or ""
        body.append([
            r["variant"], r.get("policy", ""), r.get("arrival", ""),
            _f(r.get("arrival_rate_per_s"), 2), r.get("concurrency", ""),
            r.get("num_requests", ""),
            r.get("max_batch_size", ""), r.get("prefix_reuse", ""), r["status"],
            _f(r["output_tokens_per_s"]), vs_seq, _f(r["requests_per_s"], 2),
            _f(r.get("goodput_requests_per_s"), 2), _f(r.get("slo_met_pct"), 0),
            _f(r.get("queue_ms_p50")), _f(r["ttft_ms_p50"]), _f(r["ttft_ms_p99"]),
            _f(r["tpot_ms_p50"], 2), _f(r["tpot_ms_p99"], 2), _f(r["e2e_ms_p99"]),
            _f(r.get("mean_batch_size"), 2), ttft_ratio, same, busy_mark(r), why])
    return "\n".join(["## Online load", "", table(head, body)]) + "\n"
