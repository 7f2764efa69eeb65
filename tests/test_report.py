"""`infer-opt report`: markdown plus PNGs beside the CSV, with optional columns handled."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from infer_opt.cli import main
from infer_opt.format.columns import COLUMNS

from .tables import flat
from .test_compare import fake_cell, write_run

PNG = b"\x89PNG\r\n\x1a\n"


def rich_run(path: Path) -> Path:
    """Static-batch rows at three batch sizes, a kl_mean column and two online rows."""
    cells = []
    for i, (variant, step) in enumerate([("baseline", 30.0), ("kv-cache", 10.0), ("int8", 6.0)]):
        for j, bs in enumerate((1, 4, 16)):
            cells.append(fake_cell(3 * i + j, variant, step * (1 + bs / 16), seed=i * 10 + j,
                                   bs=bs))
    extra = ["request_rate_per_s"]  # a load column another workload might add
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS + extra)
        w.writeheader()
        for row, _ in cells:
            w.writerow({**row, "kl_mean": 0.02 if row["variant"] == "int8" else 0.0})
        for k, rate in enumerate((1.0, 2.0)):
            row, samples = fake_cell(9 + k, "kv-cache", 10.0 * (1 + rate), seed=99 + k)
            row.update(workload="online", batch_size="", request_rate_per_s=rate,
                       machine_busy=True)
            w.writerow(row)
            cells.append((row, samples))  # every ok row has its samples line
    path.with_name(path.stem + ".samples.jsonl").write_text(
        "".join(json.dumps(s) + "\n" for _, s in cells))
    return path


def test_report_writes_every_plot(tmp_path: Path) -> None:
    csv_path = rich_run(tmp_path / "20260101-000000-x-abcd.csv")
    assert main(["report", str(csv_path)]) == 0
    stem = tmp_path / "20260101-000000-x-abcd"
    text = flat(Path(f"{stem}.report.md").read_text())
    for kind in ("latency", "throughput", "fidelity", "load"):
        png = Path(f"{stem}.{kind}.png")
        assert png.read_bytes()[:8] == PNG, kind
        assert f"]({png.name})" in text
    assert "## Not plotted" not in text
    assert "| int8 | 16 |" in text  # the comparison table is included


def test_report_without_optional_columns_says_what_is_missing(tmp_path: Path) -> None:
    write_run(tmp_path / "r.csv", [fake_cell(0, "baseline", 20.0, 1),
                                   fake_cell(1, "kv-cache", 10.0, 2)])
    assert main(["report", str(tmp_path)]) == 0  # a directory: its newest run
    text = flat((tmp_path / "r.report.md").read_text())
    # kl_mean is in the schema; these rows simply have no value for it.
    assert "speedup vs fidelity: no ok row with kl_mean" in text
    assert "serving curves: no ok row" in text
    assert (tmp_path / "r.latency.png").is_file()
    assert not (tmp_path / "r.fidelity.png").exists()


def test_report_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no results CSV" in capsys.readouterr().err
    (tmp_path / "e.csv").write_text("")
    assert main(["report", str(tmp_path / "e.csv")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_report_notes_a_torn_line_and_marks_busy_rows(tmp_path: Path) -> None:
    csv_path = rich_run(tmp_path / "r.csv")
    csv_path.write_bytes(csv_path.read_bytes()[:-30])  # the last (online) row was cut
    assert main(["report", str(csv_path)]) == 0
    text = flat((tmp_path / "r.report.md").read_text())
    assert "Note: r.csv: line 12 was cut mid-row (an interrupted write) and is dropped" in text
    online = [ln for ln in text.splitlines() if ln.startswith("| kv-cache | | |")]
    assert len(online) == 1 and "| busy |" in online[0]  # measured on a busy machine
    assert "busy: while this row was timed, other processes used" in text


def test_latency_whisker_falls_back_to_the_max() -> None:
    from infer_opt.results.report import tail

    assert tail({"tpot_ms_p99": "", "tpot_ms_max": "12.5"}, "tpot_ms") == 12.5
    assert tail({"tpot_ms_p99": "11.0", "tpot_ms_max": "12.5"}, "tpot_ms") == 11.0
