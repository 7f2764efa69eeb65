"""pytest-benchmark JSON -> a results CSV (+ samples), so `compare` and `report` read both.

A benchmark whose `extra_info` holds a results `row` (bench/test_cells.py) becomes that row
exactly, with its raw samples. Any other benchmark (bench/test_micro.py) becomes a row of
workload `pytest-benchmark`: its variant is the test name with parameters, and its e2e_ms_*
columns are pytest-benchmark's per-round statistics in milliseconds (median -> p50, stddev ->
std; p90/p99 only when the JSON kept the raw data, `--benchmark-save-data`). Those raw round
times go to the samples file as e2e_ms, so compare's bootstrap can use them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from infer_opt.core.errors import UserError
from infer_opt.core.stats import Stats
from infer_opt.format.columns import COLUMNS, empty_row


def _environment(doc: dict[str, Any]) -> dict[str, Any]:
    machine = doc.get("machine_info") or {}
    commit = doc.get("commit_info") or {}
    return {"host": machine.get("node", ""),
            "cpu_model": (machine.get("cpu") or {}).get("brand_raw", ""),
            "cpu_count": (machine.get("cpu") or {}).get("count", ""),
            "python_version": machine.get("python_version", ""),
            "git_commit": (commit.get("id") or "")[:12] + ("-dirty" if commit.get("dirty") else ""),
            "timestamp_utc": doc.get("datetime", "")}


def convert(json_path: Path, out_dir: Path) -> Path:
    """Write <out_dir>/<json stem>.csv and .samples.jsonl; return the CSV path."""
    import pandas as pd

    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        benches = doc["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError("json", f"{json_path} is not a pytest-benchmark JSON file ({exc})") from None
    if not benches:
        raise UserError("json", f"{json_path} holds no benchmarks")
    # One flat frame: name, group, stats.*, extra_info.* (json_normalize flattens nested keys).
    frame = pd.json_normalize(benches, max_level=1)
    env = _environment(doc)
    run_id = json_path.stem
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for i, b in enumerate(frame.to_dict(orient="records")):
        if isinstance(b.get("extra_info.row"), dict):
            row = {k: v for k, v in b["extra_info.row"].items() if k in COLUMNS}
            s = dict(b.get("extra_info.samples") or {})
        else:
            row, s = _micro_row(b, env)
        row.update(run_id=run_id, cell_index=i)
        s.update(run_id=run_id, cell_index=i)
        rows.append({**empty_row(), **row})
        samples.append(s)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{run_id}.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(csv_path, index=False, quoting=csv.QUOTE_MINIMAL)
    with open(out_dir / f"{run_id}.samples.jsonl", "w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(json.dumps(s) + "\n")
    return csv_path


def _micro_row(b: dict[str, Any], env: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    row = empty_row()
    row.update(env)
    info = {k.removeprefix("extra_info."): v for k, v in b.items() if k.startswith("extra_info.")}
    data = b.get("stats.data")
    ms = [float(x) * 1e3 for x in data] if isinstance(data, list) and data else []
    row.update(suite="pytest-benchmark", model="", notes=f"group: {b.get('group') or ''}",
               variant=b.get("name", ""),
               engine="torch", device="cpu", workload="pytest-benchmark",
               timed_runs=b.get("stats.rounds", ""), status="ok",
               dtype=info.get("dtype", ""), attn_implementation=info.get("impl", ""))
    if ms:
        row.update(Stats.of(ms).columns("e2e_ms"))
    else:
        for ours, theirs in (("mean", "mean"), ("std", "stddev"), ("p50", "median"),
                             ("min", "min"), ("max", "max")):
            v = b.get(f"stats.{theirs}")
            row[f"e2e_ms_{ours}"] = "" if v is None else float(v) * 1e3
    ops = b.get("stats.ops")
    row["requests_per_s"] = "" if ops is None else float(ops)
    s: dict[str, Any] = {"variant": row["variant"],
                         "workload": {"kind": "pytest-benchmark", "name": b.get("fullname", "")}}
    if ms:
        s["runs"] = {"round": list(range(len(ms))), "e2e_ms": ms}
    return row, s
