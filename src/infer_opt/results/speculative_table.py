"""The speculative-decoding section of the results table.

One line per row with speculative columns: how many drafted tokens the target accepted, tokens
per target forward (what the draft saves: plain decoding makes 1), where decode time went, and
the row against the same stack without its speculative part (`kv-cache+sdpa+spec-lookup[k=4]`
against `kv-cache+sdpa`, same workload): decode speedup and identical greedy tokens.
"""

from __future__ import annotations

import re
from typing import Any

from infer_opt.core.greedy import greedy_match
from infer_opt.format.io import parse_number as _num
from infer_opt.results.markdown import table
from infer_opt.results.reference import speedup

SPEC_PART = re.compile(r"\+?spec-[\w-]+(\[[^\]]*\])?")


def plain_variant(variant: str) -> str:
    """'kv-cache+sdpa+spec-self[layers=8,k=4]' -> 'kv-cache+sdpa'."""
    return SPEC_PART.sub("", variant).strip("+")


def _f(v: Any, digits: int = 1) -> str:
    x = _num(v)
    return "" if x is None else f"{x:.{digits}f}"


def render_speculative(rows: list[dict[str, str]], tokens: dict[str, Any]) -> str:
    """Markdown for rows with speculative columns ('' when there are none)."""

    spec = [r for r in rows if r.get("status") == "ok" and _num(r.get("tokens_per_target_forward"))]
    if not spec:
        return ""
    head = ["variant", "bs", "prompt", "new", "accepted %", "tokens / target forward",
            "draft time %", "verify time %", "decode tok/s", "vs plain", "greedy = plain"]
    body: list[list[str]] = []
    for r in spec:
        plain = plain_variant(r["variant"])
        ratio = speedup(r, rows, plain)
        base = next((p for p in rows if p["variant"] == plain and p["status"] == "ok"
                     and all(p.get(k) == r.get(k) for k in ("model", "workload", "prompt_tokens",
                                                             "new_tokens", "batch_size"))), None)
        match = ""
        a = tokens.get(r["cell_index"])
        b = tokens.get(base["cell_index"]) if base is not None else None
        if a and b:
            match = f"{greedy_match(a, b)}/{len(a[0]) if a else 0}"
        body.append([
            r["variant"], r["batch_size"], r["prompt_tokens"], r["new_tokens"],
            _f(r.get("acceptance_rate_pct")), _f(r.get("tokens_per_target_forward"), 2),
            _f(r.get("draft_time_pct")), _f(r.get("verify_time_pct")),
            _f(r.get("decode_tokens_per_s")), "" if ratio is None else f"{ratio:.2f}x",
            match])
    return "\n".join(["## Speculative decoding (vs the same stack without the draft)", "",
                      table(head, body)]) + "\n"
