"""Rows measured against a reference row of the same run: which row is the reference, the
decode speedup over it. Shared by the
table's sections (main, speculative, frontier) and the report."""

from __future__ import annotations

from typing import Any

from infer_opt.format.io import parse_number as _num


def workload_key(row: dict[str, str]) -> tuple[str, str, str, str, str, str]:
    """(model, device, workload, prompt_tokens, new_tokens, depth_tokens): what a row was
    measured on, apart from its variant, engine and batch size (a row at depth 2048 is measured
    against its reference at depth 2048; a row written before depths existed is at depth 0).
    The one workload key: compare's join adds the batch size and the samples' workload
    (results/compare/join.py)."""
    return (row.get("model", ""), row.get("device", ""), row.get("workload", ""),
            row.get("prompt_tokens", ""), row.get("new_tokens", ""),
            row.get("depth_tokens") or "0")


def find_reference(row: dict[str, str], rows: list[dict[str, str]], reference: str
                   ) -> tuple[dict[str, str] | None, bool]:
    """The reference row for `row`: same batch if present, else batch 1. (row, same_batch)."""
    refs = [r for r in rows if r["variant"] == reference and r["status"] == "ok"
            and workload_key(r) == workload_key(row)]
    for r in refs:
        if r["batch_size"] == row["batch_size"]:
            return r, True
    for r in refs:
        if r["batch_size"] == "1":
            return r, False
    return None, False


def speedup(row: dict[str, str], rows: list[dict[str, str]], reference: str,
            same_batch_only: bool = True) -> float | None:
    """Decode tokens/s of `row` over its `reference` row (find_reference); None when there is
    none, when either value is missing, or (same_batch_only) when only a bs-1 reference exists."""
    ref, same_batch = find_reference(row, rows, reference)
    if ref is None or (same_batch_only and not same_batch):
        return None
    mine, theirs = _num(row.get("decode_tokens_per_s")), _num(ref.get("decode_tokens_per_s"))
    return mine / theirs if mine and theirs else None


def paired_speedup(row: dict[str, str], ref: dict[str, str], samples: dict[str, Any]
                   ) -> tuple[float, float | None, float | None] | None:
    """Decode tok/s of `row` over `ref`, the median of per-round ratios with its 95% bootstrap
    interval (core/stats.bootstrap_paired_ratio), when both rows' per-run samples carry
    `decode_tokens_per_s` and share rounds (the same run's interleaved rounds); else None.
    A ratio taken round by round cancels what each round did to both rows (the machine's
    drift), which a ratio of two medians does not."""
    from infer_opt.core.stats import bootstrap_paired_ratio

    from infer_opt.format.samples import same_rounds

    mine, theirs = samples.get(row.get("cell_index", "")), samples.get(ref.get("cell_index", ""))
    if row.get("group") != ref.get("group") or not same_rounds(mine, theirs):
        return None  # timed in different jobs: round i of one is not round i of the other
    a, b = (mine or {}).get("runs") or {}, (theirs or {}).get("runs") or {}
    key = "decode_tokens_per_s"
    if not (a.get(key) and b.get(key) and a.get("round") and b.get("round")):
        return None
    try:
        return bootstrap_paired_ratio(b[key], b["round"], a[key], a["round"])
    except ValueError:  # no shared round, or malformed samples: no paired ratio
        return None
