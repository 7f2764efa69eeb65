"""The comparison table: one line per row, with speedup and greedy-token match against the
reference variant (baseline) on the same prompts and lengths."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .results import read_samples


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _key(row: dict[str, str]) -> tuple[str, str, str, str]:
    return (row.get("model", ""), row.get("workload", ""), row.get("prompt_tokens", ""),
            row.get("new_tokens", ""))


def find_reference(row: dict[str, str], rows: list[dict[str, str]], reference: str
                   ) -> tuple[dict[str, str] | None, bool]:
    """The reference row for `row`: same batch if present, else batch 1. (row, same_batch)."""
    refs = [r for r in rows if r["variant"] == reference and r["status"] == "ok" and _key(r) == _key(row)]
    for r in refs:
        if r["batch_size"] == row["batch_size"]:
            return r, True
    for r in refs:
        if r["batch_size"] == "1":
            return r, False
    return None, False


def greedy_match(tokens: list[list[int]], ref_tokens: list[list[int]]) -> tuple[int, int]:
    """(shortest identical greedy prefix over the shared prompts, tokens per request)."""
    shared = min(len(tokens), len(ref_tokens))
    n = len(tokens[0]) if tokens else 0
    best = n
    for a, b in zip(tokens[:shared], ref_tokens[:shared]):
        same = 0
        for x, y in zip(a, b):
            if x != y:
                break
            same += 1
        best = min(best, same)
    return best, n


def _f(value: Any, digits: int = 1) -> str:
    v = _num(value)
    return "" if v is None else f"{v:.{digits}f}"


def render(csv_path: Path, reference: str = "baseline") -> str:
    rows = read_rows(csv_path)
    samples_path = csv_path.with_name(csv_path.name.removesuffix(".csv") + ".samples.jsonl")
    tokens = {str(s["cell_index"]): s.get("tokens") for s in read_samples(samples_path)}
    head = ["variant", "bs", "prompt", "new", "status", "TTFT p50 ms", "TPOT p50 ms",
            "TPOT p99 ms", "decode tok/s", f"speedup vs {reference}", "greedy = ref",
            "weight MB", "peak RSS MB", "roofline %", "reason / notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("workload") == "online":
            continue  # rendered in their own section below
        ref, same_batch = find_reference(r, rows, reference)
        speedup = match = ""
        if ref is not None and r["status"] == "ok":
            mine, theirs = _num(r["decode_tokens_per_s"]), _num(ref["decode_tokens_per_s"])
            if mine and theirs:
                speedup = f"{mine / theirs:.2f}x" + ("" if same_batch else " (vs bs1)")
            a, b = tokens.get(r["cell_index"]), tokens.get(ref["cell_index"])
            if a and b:
                same, n = greedy_match(a, b)
                match = f"{same}/{n}"
        why = r.get("reason") or r.get("notes") or ""
        lines.append("| " + " | ".join([
            r["variant"], r["batch_size"], r["prompt_tokens"], r["new_tokens"], r["status"],
            _f(r["ttft_ms_p50"]), _f(r["tpot_ms_p50"], 2), _f(r["tpot_ms_p99"], 2),
            _f(r["decode_tokens_per_s"]), speedup, match, _f(r["weight_mb"]),
            _f(r["peak_rss_mb"], 0), _f(r["roofline_pct"]), why.replace("|", "/"),
        ]) + " |")
    env = rows[0] if rows else {}
    footer = (f"\nmodel {env.get('model', '')}, device {env.get('device', '')} "
              f"({env.get('gpu_name') or env.get('cpu_model', '')}), {env.get('torch_threads', '')} "
              f"threads, torch {env.get('torch_version', '')}, transformers "
              f"{env.get('transformers_version', '')}, measured bandwidth "
              f"{env.get('bandwidth_gb_per_s', '')} GB/s, commit {env.get('git_commit', '')}\n")
    from .serving.table import render_online

    online = render_online(rows, tokens)
    if online and all(r.get("workload") == "online" for r in rows):
        lines = []  # nothing static to show: only the online section
    return "\n".join(lines) + "\n" + (online and "\n" + online) + footer


def write_table(csv_path: Path, reference: str = "baseline") -> Path:
    text = render(csv_path, reference)
    out = csv_path.with_suffix(".md")
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
