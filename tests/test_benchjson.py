"""pytest-benchmark JSON -> results CSV: micro-benchmark rows and rows kept in extra_info."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from infer_opt.cli import main
from infer_opt.format.columns import COLUMNS
from infer_opt.format.io import read_results
from infer_opt.results.compare import compare_runs

from .test_compare import fake_cell


def bench_json(path: Path, slow: float = 1.0) -> Path:
    row, samples = fake_cell(0, "kv-cache", 10.0 * slow, seed=3)
    data = [0.0010, 0.0011, 0.0012, 0.0010, 0.0013]
    doc = {
        "machine_info": {"node": "box", "cpu": {"brand_raw": "Some CPU", "count": 2},
                         "python_version": "3.11.0"},
        "commit_info": {"id": "abcdef1234567890", "dirty": False},
        "datetime": "2026-01-01T00:00:00", "version": "5.1.0",
        "benchmarks": [
            {"group": "attention n=512", "name": "test_attention[sdpa-512]",
             "fullname": "bench/test_micro.py::test_attention[sdpa-512]", "params": {},
             "extra_info": {"impl": "sdpa", "n": 512},
             "stats": {"min": 0.0010, "max": 0.0013, "mean": 0.00112, "stddev": 0.00013,
                       "median": 0.0011, "rounds": 5, "ops": 892.9,
                       "data": [x * slow for x in data]}},
            {"group": "cells", "name": "test_cell[kv-cache]", "fullname": "x::test_cell",
             "extra_info": {"row": row, "samples": samples},
             "stats": {"min": 1.0, "max": 1.0, "mean": 1.0, "stddev": 0.0, "median": 1.0,
                       "rounds": 1, "ops": 1.0}},
        ],
    }
    path.write_text(json.dumps(doc))
    return path


def test_converter_writes_our_schema(tmp_path: Path) -> None:
    src = bench_json(tmp_path / "0001_run.json")
    assert main(["import-benchmark", str(src), "--out", str(tmp_path / "out")]) == 0
    csv_path = tmp_path / "out" / "0001_run.csv"
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COLUMNS
    micro, cell = rows
    assert micro["variant"] == "test_attention[sdpa-512]"
    assert micro["workload"] == "pytest-benchmark" and micro["status"] == "ok"
    assert float(micro["e2e_ms_p50"]) == 1.1 and float(micro["e2e_ms_max"]) == 1.3
    assert micro["cpu_model"] == "Some CPU" and micro["git_commit"] == "abcdef123456"
    assert cell["variant"] == "kv-cache" and cell["tpot_ms_p50"] != ""
    assert cell["run_id"] == "0001_run" and cell["cell_index"] == "1"
    samples = [json.loads(x) for x in (tmp_path / "out" / "0001_run.samples.jsonl").read_text().splitlines()]
    assert samples[0]["runs"]["e2e_ms"] == [1.0, 1.1, 1.2, 1.0, 1.3]
    assert len(samples[1]["itl_ms"]) == 6  # the cell's raw samples, kept


def test_converted_runs_feed_compare(tmp_path: Path) -> None:
    a = main(["import-benchmark", str(bench_json(tmp_path / "a.json")), "--out", str(tmp_path)])
    b = main(["import-benchmark", str(bench_json(tmp_path / "b.json", slow=1.5)),
              "--out", str(tmp_path)])
    assert a == b == 0
    # Raw ratios: the slowed cell is also the kv-cache reference, so normalizing would hide it.
    cmp = compare_runs(read_results(tmp_path / "a.csv"), read_results(tmp_path / "b.csv"), absolute=True)
    assert sorted(r.label for r in cmp.regressed) == [
        "kv-cache static-batch bs=1 prompt=8 new=16", "test_attention[sdpa-512] pytest-benchmark"]


def test_converter_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["import-benchmark", str(bad), "--out", str(tmp_path)]) == 2
    bad.write_text('{"benchmarks": []}')
    assert main(["import-benchmark", str(bad), "--out", str(tmp_path)]) == 2
