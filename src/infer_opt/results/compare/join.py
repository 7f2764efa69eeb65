"""Which rows of OLD and NEW are compared: labels, join keys, `--map` and `--baseline-variant`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infer_opt.core.errors import UserError
from infer_opt.format.io import ResultsFile
from infer_opt.results.reference import workload_key

# Identity columns a join uses from the CSV (the samples' workload dict adds the rest).
JOIN_COLUMNS = ["model", "variant", "engine", "device", "workload", "batch_size",
                "prompt_tokens", "new_tokens",
                "depth_tokens",
                ]
# Workload keys that change how long a cell is measured, not what it measures.
NOT_IDENTITY_WORKLOAD_KEYS = {"repeats", "warmup_runs", "warmup_new_tokens", "min_repeats",
                              "max_repeats", "min_timed_s", "max_timed_s",
                              "target_precision_pct", "rounds"}


def label(row: dict[str, str]) -> str:
    parts = [row.get("variant", ""), f"{row.get('workload', '')}"]
    for col, short in (("batch_size", "bs"), ("policy", "policy"), ("arrival", "arrival"),
                       ("arrival_rate_per_s", "rate"), ("concurrency", "concurrency"),
                       ("prefix_reuse", "reuse"),
                       ("prompt_tokens", "prompt"), ("new_tokens", "new")):
        if row.get(col):
            parts.append(f"{short}={row[col]}")
    if row.get("depth_tokens") not in (None, "", "0"):  # context already in the KV cache
        parts.append(f"depth={row['depth_tokens']}")
    return " ".join(parts)


def join_key(run: ResultsFile, row: dict[str, str], use_workload: bool) -> tuple[str, ...]:
    """What a row was measured on, without its variant and engine: reference.workload_key, its
    batch size and (use_workload) the samples' workload dict less how long it was timed."""
    key = workload_key(row) + (row.get("batch_size", ""),)
    if not use_workload:
        return key
    s = run.samples_of(row)
    w = dict(s.get("workload") or {}) if s else {}
    for k in NOT_IDENTITY_WORKLOAD_KEYS:
        w.pop(k, None)
    if w.get("depth_tokens", 0) == 0:  # in the row's key already; runs before depths had none
        w.pop("depth_tokens", None)
    if w.get("concurrency", 0) == 0:  # open-loop loads: runs before schema 6 had no such key
        w.pop("concurrency", None)
    return key + (json.dumps(w, sort_keys=True),)


def _split_map(spec: str) -> tuple[str, str, str]:
    """Split 'NEW=OLD' at the '=' outside brackets (variants carry 'name[key=value]')."""
    depth = 0
    for i, ch in enumerate(spec):
        depth += (ch == "[") - (ch == "]")
        if ch == "=" and depth == 0:
            return spec[:i].strip(), "=", spec[i + 1:].strip()
    return spec.strip(), "", ""


def parse_maps(specs: Sequence[str]) -> dict[str, str]:
    """['X+p=X'] -> {'X+p': 'X'}: NEW's rows of variant X+p are joined to OLD's rows of X."""
    out: dict[str, str] = {}
    for spec in specs:
        new, sep, old = _split_map(spec)
        if not sep or not new or not old or new in out:
            raise UserError("--map", f"expected NEW_VARIANT=OLD_VARIANT once per variant (e.g. "
                                     f"'kv-cache+myplugin=kv-cache'), got {spec!r}")
        out[new] = old
    return out


@dataclass
class Pair:
    old: dict[str, str]
    new: dict[str, str]
    key: tuple[str, ...]  # join key


def join(old: ResultsFile, new: ResultsFile, same: bool, baseline: str | None,
         maps: dict[str, str], use_workload: bool) -> tuple[list[Pair], list[str], list[str]]:
    """(pairs, labels only in old, labels of new rows with no match)."""
    index: dict[tuple[Any, ...], dict[str, str]] = {}
    count: dict[tuple[Any, ...], int] = {}
    for row in old.rows:  # a repeated identity gets #2, #3 so no row is silently lost
        k = (row["variant"], join_key(old, row, use_workload))
        count[k] = count.get(k, 0) + 1
        index[k + (count[k],)] = row
    pairs, unmatched, used = [], [], set()
    seen: dict[tuple[Any, ...], int] = {}
    for row in new.rows:
        v, key = row["variant"], join_key(new, row, use_workload)
        target = maps.get(v) or baseline or (None if same else v)
        if target is None or (same and target == v):
            continue  # within a run: only mapped rows, or rows against the baseline
        seen[(v, key)] = seen.get((v, key), 0) + 1
        ref = index.get((target, key, seen[(v, key)] if target == v else 1))
        if ref is None:
            unmatched.append(label(row))
            continue
        used.add(id(ref))
        pairs.append(Pair(ref, row, key))
    only_old = [] if same or baseline else [label(r) for r in old.rows if id(r) not in used]
    return pairs, only_old, unmatched


def variants(run: ResultsFile) -> list[str]:
    return sorted({r["variant"] for r in run.rows})


def ok_variants(run: ResultsFile) -> set[str]:
    return {r["variant"] for r in run.rows if r["status"] == "ok"}
