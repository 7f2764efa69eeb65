"""format.io.read_results: every command reads results files through it, and every bad file is
one line, exit code 2, with nothing printed or written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from infer_opt import SCHEMA_VERSION
from infer_opt.cli import main
from infer_opt.core.errors import UserError
from infer_opt.format.columns import COLUMNS, run_columns
from infer_opt.format.io import ResultsWriter, read_results, samples_problem

from .tables import flat
from .test_compare import fake_cell, write_run

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
HEADER = ",".join(COLUMNS)


def good_row_line() -> str:
    """One whole data line of a valid run."""
    return good_text().splitlines()[1]


def good_text() -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return write_run(Path(d) / "g.csv", [fake_cell(0, "v", 10.0, 1)],
                         with_samples=False).read_text()


def other_version_text() -> str:
    header, line = good_text().splitlines()[:2]
    return header + "\n" + line.replace(str(SCHEMA_VERSION), "1", 1) + "\n"


BAD: list[tuple[str, bytes | str, str]] = [
    ("empty", "", "is empty"),
    ("blank", "\n\n  \n", "is empty"),
    ("png", PNG, "is not a CSV: it holds a PNG image"),
    ("gzip", gzip.compress(b"schema_version,variant\n"), "is not a CSV: it holds gzip data"),
    ("nul", b"schema_version\x00,variant\n", "is not a CSV: it holds binary data"),
    ("latin1", "variant\ncaf\xe9\n".encode("latin-1"),
     "is not UTF-8 text (byte 0xe9 at offset 11)"),
    ("text", "hello world\nthis is not a csv\n",
     "is not an infer-opt results CSV (no column schema_version, variant, status, model)"),
    ("foreign", "a,b\n1,2\n",
     "is not an infer-opt results CSV (no column schema_version, variant, status, model)"),
    ("header-only", HEADER + "\r\n", "has a header but no rows"),
    ("only-row-torn", HEADER + "\r\n" + ",".join([str(SCHEMA_VERSION)] * 5),
     "has a header but no rows (its only row was cut"),
    ("short-middle", "SHORT", f"line 2: 5 fields where the header has {len(COLUMNS)}"),
    ("other-version", "OTHER",
     f"has schema version '1'; this infer-opt reads versions 2 to {SCHEMA_VERSION}"),
    ("missing-core", f"schema_version,variant,status,model\n{SCHEMA_VERSION},v,ok,m\n",
     f"lacks core columns of schema version {SCHEMA_VERSION}: run_id, cell_index, suite, group, engine and"),
    ("out-of-order", "SWAP",
     f"column 6 is 'variant' where schema version {SCHEMA_VERSION} has 'model'"),
    ("bad-extra", "EXTRA", "extra column 'bad name' is not a metric name"),
    ("bad-status", "STATUS", "line 2: status 'done' is not one of ok, skipped, failed"),
]


def bad_file(tmp: Path, name: str, content: bytes | str) -> Path:
    if content == "SHORT":
        content = HEADER + "\r\n" + ",".join([str(SCHEMA_VERSION)] * 5) + "\r\n" + good_row_line() + "\r\n"
    elif content == "OTHER":
        content = other_version_text()
    elif content == "SWAP":
        cols = list(COLUMNS)
        i, j = cols.index("model"), cols.index("variant")
        cols[i], cols[j] = cols[j], cols[i]
        content = ",".join(cols) + "\n" + good_row_line() + "\n"
    elif content == "EXTRA":
        content = HEADER + ",bad name\n" + good_row_line() + ",1\n"
    elif content == "STATUS":
        content = HEADER + "\n" + good_row_line().replace(",ok,", ",done,", 1) + "\n"
    path = tmp / f"{name}.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("name, content, message", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("command", ["table", "compare", "report"])
def test_bad_file_is_one_line_exit_2_nothing_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, name: str,
        content: bytes | str, message: str) -> None:
    bad = bad_file(tmp_path, name, content)
    args = [command, str(bad)]
    if command == "compare":
        good = write_run(tmp_path / "good.csv", [fake_cell(0, "v", 10.0, 1)])
        args = [command, str(good), str(bad)]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and err.startswith(f"infer-opt: error: csv: {bad}"), err
    assert message in err, err
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", str(tmp_path / "nope.csv")]) == 2
    assert capsys.readouterr().err.strip() == (f"infer-opt: error: csv: file "
                                               f"{str(tmp_path / 'nope.csv')!r} not found")
    with pytest.raises(UserError, match="is a directory, not a results CSV"):
        read_results(tmp_path)


def test_a_torn_last_line_is_dropped_with_a_note(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write_run(tmp_path / "r.csv", [fake_cell(0, "kv-cache", 10.0, 1),
                                          fake_cell(1, "kv-cache+sdpa", 8.0, 2)])
    whole = path.read_bytes()
    path.write_bytes(whole[:-40])  # the interrupted write cut the last row
    run = read_results(path)
    assert [r["variant"] for r in run.rows] == ["kv-cache"]
    assert run.notes[0] == ("r.csv: line 3 was cut mid-row (an interrupted write) and is "
                            "dropped; 1 whole rows read")
    assert main(["table", str(path)]) == 0
    out = flat(capsys.readouterr().out)
    assert out.startswith("note: r.csv: line 3 was cut mid-row")
    assert "| kv-cache | 1 |" in out and "kv-cache+sdpa" not in out
    # A last line with every field but no final newline was cut inside its last value.
    path.write_bytes(whole.rstrip(b"\r\n"))
    assert [r["variant"] for r in read_results(path).rows] == ["kv-cache"]


def test_extra_metric_columns_are_read(tmp_path: Path) -> None:
    row, s = fake_cell(0, "kv-cache+spec", 10.0, 1)
    row["acceptance_rate_pct"] = 71.5
    path = write_run(tmp_path / "r.csv", [(row, s)], extra=["acceptance_rate_pct"])
    run = read_results(path)
    assert run.extra_columns == ["acceptance_rate_pct"]
    assert run.rows[0]["acceptance_rate_pct"] == "71.5"
    assert run.samples_of(run.rows[0]) == json.loads(json.dumps(s))


def test_writer_and_reader_agree(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path, "run-1", columns=run_columns(["compile_extra_s"]))
    for i in range(2):
        row, s = fake_cell(i, f"v{i}", 10.0, i)
        writer.add({**row, "compile_extra_s": 1.5}, s)
    writer.close()
    run = read_results(writer.csv_path)
    assert [r["variant"] for r in run.rows] == ["v0", "v1"] and run.notes == []
    assert run.rows[1]["compile_extra_s"] == "1.5" and set(run.samples) == {"0", "1"}
    with pytest.raises(ValueError, match="core columns followed by new identifiers"):
        ResultsWriter(tmp_path, "run-2", columns=COLUMNS + ["kl_mean"])


def test_samples_problems_refuse_or_are_notes_with_point_ratios(tmp_path: Path) -> None:
    row, s = fake_cell(0, "v", 10.0, 1)
    row1, s1 = fake_cell(1, "w", 10.0, 2)
    s1["runs"]["tpot_ms"] = s1["runs"]["tpot_ms"][:-1]  # lists of unequal length
    path = write_run(tmp_path / "r.csv", [(row, s), (row1, s1)])
    sp = tmp_path / "r.samples.jsonl"
    sp.write_text(sp.read_text() + '{"cell_index": 2, "runs": {"tp')  # torn last line
    with pytest.raises(UserError, match="r.samples.jsonl is corrupt: cell 1: the lists in"):
        read_results(path)
    run = read_results(path, strict=False)
    assert set(run.samples) == {"0"}
    assert "r.samples.jsonl: samples of cell 1 ignored (the lists in 'runs' differ in length)" \
        in run.notes
    assert "r.samples.jsonl: line 3 was cut mid-write and is dropped" in run.notes
    sp.write_text("not json\n" + json.dumps(s) + "\n")
    with pytest.raises(UserError, match="is corrupt \\(line 1 is not JSON\\)"):
        read_results(path)
    run = read_results(path, strict=False)
    assert run.samples == {}
    assert run.notes[0] == (f"samples file {sp} is corrupt (line 1 is not JSON): r.csv "
                            "has summary statistics only (no intervals)")


@pytest.mark.parametrize("line, problem", [
    ({"runs": {}}, "not an object with a cell_index"),
    ({"cell_index": 0, "runs": {"tpot_ms": [1.0, "x"]}},
     "runs['tpot_ms'] holds a value that is not"),
    ({"cell_index": 0, "runs": {"round": [0, 0], "tpot_ms": [1.0, 2.0]}},
     "runs['round'] must be distinct integers"),
    ({"cell_index": 0, "runs": {"tpot_ms": [1.0]}, "itl_ms": [[1.0], [2.0]]},
     "'itl_ms' has 2 runs where 'runs' has 1"),
    ({"cell_index": 0, "requests": [{"ttft_ms": "fast"}]}, "a request's 'ttft_ms' is not a number"),
    ({"cell_index": 0, "requests": [{"ttft_ms": 1.0, "tpot_ms": None, "itl_ms": [1.0]}]}, None),
])
def test_samples_shape_checks(line: dict, problem: str | None) -> None:
    found = samples_problem(line)
    assert (found is None) if problem is None else (found is not None and problem in found)


def older_version(tmp: Path, version: int, drop: list[str]) -> Path:
    """A run written by an older infer-opt: the later columns absent, the version stamped."""
    import csv

    good = write_run(tmp / "new.csv", [fake_cell(0, "v", 10.0, 1), fake_cell(1, "w", 12.0, 1)])
    rows = list(csv.DictReader(good.open()))
    header = [c for c in rows[0] if c not in drop]
    old = tmp / "old.csv"
    with old.open("w", newline="") as fh:
        w = csv.DictWriter(fh, header, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "schema_version": str(version)})
    good.with_suffix(".samples.jsonl").rename(old.with_suffix(".samples.jsonl"))
    return old


def test_an_older_schema_is_read_with_its_later_columns_empty(tmp_path: Path) -> None:
    from infer_opt.format.columns import ADDED_IN

    later = [c for v in range(3, SCHEMA_VERSION + 1) for c in ADDED_IN.get(v, [])]
    old = older_version(tmp_path, 2, later)
    run = read_results(old)
    assert run.columns[:len(COLUMNS)] == list(COLUMNS)
    assert [r["variant"] for r in run.rows] == ["v", "w"]
    assert all(r[c] == "" for r in run.rows for c in later)
    assert any("written with schema version 2" in n for n in run.notes), run.notes


def test_an_older_version_that_already_has_later_columns_is_refused(tmp_path: Path) -> None:
    old = older_version(tmp_path, 2, [])
    with pytest.raises(UserError, match="says schema version 2 but already has"):
        read_results(old)
