"""A run's files: writing them as cells finish, and the one reader every command uses.

results/<run_id>.csv            one row per cell (columns.COLUMNS, then extra metric columns)
results/<run_id>.samples.jsonl  raw samples, one JSON line per row (format below)
results/<run_id>.md             the comparison table, written when the run ends

Samples line (schema version 2), one per row, keyed to it by cell_index:
  {"run_id", "cell_index", "variant", "workload": {...}, "job": int,
   "runs": {"round": [int per timed run], "ttft_ms": [...], "e2e_ms": [...], "tpot_ms": [...],
            "decode_tokens_per_s": [...], "output_tokens_per_s": [...],
            "prefill_tokens_per_s": [...], "requests_per_s": [...]},
   "itl_ms": [[gaps of run 0], [gaps of run 1], ...],
   "requests": [{"round", "queue_ms", "ttft_ms", "tpot_ms" (null: 1-token answer), "e2e_ms",
                 "itl_ms": [...], ...}, ...],
   "tokens": ..., "warmup": {...}}
`runs` holds one value per timed run, computed once in the cell (readers never re-derive them);
a row's `<metric>_<stat>` column is that statistic of runs[metric] (throughput columns: the
median), and `itl_ms_<stat>` is over every gap of every run. `round` is the interleaved round
of each timed run: in one run of the suite, the variants of a workload are timed in rounds (one
timed run of every variant per round, in a seeded random order), so two rows of one run,
workload and `job` pair up round by round (a job is a group, or a chunk of `max_workers` of its
variants; round indices restart in every job; lines written before `job` existed have none). Online rows keep `requests` (every request of every timed run,
with its round); their latency columns are over requests.

read_results checks a CSV before anyone uses it and raises UserError (one line, exit code 2) for:
a missing, empty, binary or non-UTF-8 file, a CSV that is not ours (names the missing
columns), a schema version it cannot read (an older one is migrated: the core
columns added since, format/columns.ADDED_IN, are filled empty and a note says so), core
columns missing or out of order, an extra
column whose name is not an identifier, a short or long line in the middle, and a header
without rows. The writer fsyncs whole lines, so a torn LAST line (fewer fields than the header,
or no final newline) is an interrupted write: it is dropped and ResultsFile.notes says so.

A results file is its CSV and its samples file together (verdicts change without the samples),
so read_results also refuses (strict, the default): a samples file that is missing, unreadable,
not JSON lines or holds a line of the wrong shape, and a measured cell that is not a number, is
NaN or negative, or a timed cell (format/columns.Column.timed) that is infinite. With
strict=False (the commands' `--point-ratios`) those are notes instead: the bad cells are read
as empty and timed metrics are judged on point values.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infer_opt import SCHEMA_VERSION
from infer_opt.core.errors import UserError
from infer_opt.format.columns import (
    ADDED_IN,
    COLUMNS,
    MIN_READABLE_SCHEMA,
    STATUSES,
    TABLE,
    check_row,
    column,
)

FIELD = "csv"  # the field named in every error about a results file
# The columns that make a CSV recognisably ours, whatever its schema version.
OUR_COLUMNS = ("schema_version", "variant", "status", "model")
# File signatures of formats someone may pass by mistake (first bytes -> name).
MAGIC = {b"\x89PNG": "a PNG image", b"\x1f\x8b": "gzip data", b"PK\x03\x04": "a zip archive",
         b"%PDF": "a PDF", b"\x7fELF": "an executable", b"SQLite format 3": "an SQLite database"}


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class ResultsWriter:
    """Writes rows and samples lines as cells finish, each line whole and fsynced.

    columns: columns.run_columns(extra), the core columns then the run's declared metric
    columns; read_results refuses a header that is not of that form, so the writer does too.
    """

    def __init__(self, out_dir: Path, run_id: str, columns: Sequence[str] = COLUMNS) -> None:
        extra = list(columns)[len(COLUMNS):]
        if list(columns)[: len(COLUMNS)] != COLUMNS or len(set(columns)) != len(columns) or \
                not all(c.isidentifier() for c in extra):
            raise ValueError("columns must be the core columns followed by new identifiers "
                             "(columns.run_columns)")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = out_dir / f"{run_id}.csv"
        self.samples_path = out_dir / f"{run_id}.samples.jsonl"
        self.table_path = out_dir / f"{run_id}.md"
        # 'x': fail rather than overwrite an earlier run with the same id.
        self._csv = open(self.csv_path, "x", newline="", encoding="utf-8")
        self._samples = open(self.samples_path, "x", encoding="utf-8")
        self.columns = list(columns)
        self._writer = csv.DictWriter(self._csv, fieldnames=self.columns)
        self._writer.writeheader()
        self._sync(self._csv)

    @staticmethod
    def _sync(fh: Any) -> None:
        fh.flush()
        os.fsync(fh.fileno())

    def add(self, row: dict[str, Any], samples: dict[str, Any]) -> None:
        check_row(row, self.columns)
        # One write per line, flushed: an interrupted run keeps every finished row whole.
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})
        self._sync(self._csv)
        self._samples.write(json.dumps(samples) + "\n")
        self._sync(self._samples)

    def close(self) -> None:
        self._csv.close()
        self._samples.close()


def parse_number(value: Any) -> float | None:
    """A CSV cell as a finite float; None for empty, text, nan or inf."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def samples_path_for(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name.removesuffix(".csv") + ".samples.jsonl")


@dataclass
class ResultsFile:
    """A results CSV that passed read_results's checks, with its samples (when readable)."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)  # cell_index -> line
    notes: list[str] = field(default_factory=list)  # dropped torn lines, missing samples

    @property
    def extra_columns(self) -> list[str]:
        return self.columns[len(COLUMNS):]

    def samples_of(self, row: dict[str, str]) -> dict[str, Any] | None:
        return self.samples.get(row.get("cell_index", ""))


def _fail(path: Path, message: str) -> UserError:
    return UserError(FIELD, f"{path} {message}")


def _text(path: Path) -> str:
    if path.is_dir():
        raise _fail(path, "is a directory, not a results CSV")
    if not path.is_file():
        raise UserError(FIELD, f"file {str(path)!r} not found")
    data = path.read_bytes()
    if not data.strip():
        raise _fail(path, "is empty")
    kind = next((name for magic, name in MAGIC.items() if data.startswith(magic)), None)
    if kind is not None or b"\x00" in data[:4096]:
        raise _fail(path, f"is not a CSV: it holds {kind or 'binary data'}")
    try:
        return data.decode("utf-8-sig")  # a BOM (spreadsheet export) is not part of the header
    except UnicodeDecodeError as exc:
        raise _fail(path, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start})") from None


def _records(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """(line number where the record ends, fields) for every non-blank record."""
    reader = csv.reader(io.StringIO(text, newline=""))
    out = []
    try:
        for fields in reader:
            if fields:
                out.append((reader.line_num, fields))
    except csv.Error as exc:
        raise _fail(path, f"is not a valid CSV (line {reader.line_num}: {exc})") from None
    return out


def _check_header(path: Path, header: list[str]) -> None:
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise _fail(path, f"lacks core columns of schema version {SCHEMA_VERSION}: {shown}")
    for i, (want, got) in enumerate(zip(COLUMNS, header), start=1):
        if want != got:
            raise _fail(path, f"column {i} is {got!r} where schema version {SCHEMA_VERSION} has "
                              f"{want!r} (core columns come first, in order)")
    seen = set(COLUMNS)
    for name in header[len(COLUMNS):]:
        if not name.isidentifier():
            raise _fail(path, f"extra column {name!r} is not a metric name (letters, digits, _)")
        if name in seen:
            raise _fail(path, f"column {name!r} appears twice")
        seen.add(name)


def _check_row(path: Path, line: int, row: dict[str, str], seen: set[str]) -> None:
    if row["status"] not in STATUSES:
        raise _fail(path, f"line {line}: status {row['status']!r} is not one of "
                          f"{', '.join(STATUSES)}")
    index = row["cell_index"]
    if not index.isdigit():
        raise _fail(path, f"line {line}: cell_index {index!r} is not an integer")
    if index in seen:
        raise _fail(path, f"line {line}: cell_index {index} appears twice")
    seen.add(index)


def _migrate(path: Path, header: list[str], body: list[tuple[int, list[str]]],
             versions: list[str], notes: list[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Rows of an older schema version read as the current one: the core columns added since
    (format/columns.ADDED_IN) are inserted empty, in their place. Anything else is refused."""
    old = versions[0] if len(versions) == 1 else ""
    if not old.isdigit() or not MIN_READABLE_SCHEMA <= int(old) < SCHEMA_VERSION:
        other = ", ".join(repr(v) for v in versions if v != str(SCHEMA_VERSION))
        raise _fail(path, f"has schema version {other}; this infer-opt reads versions "
                          f"{MIN_READABLE_SCHEMA} to {SCHEMA_VERSION}")
    added = [c for v in range(int(old) + 1, SCHEMA_VERSION + 1) for c in ADDED_IN.get(v, [])]
    if any(c in header for c in added):
        raise _fail(path, f"says schema version {old} but already has its later columns "
                          f"({', '.join(c for c in added if c in header)})")
    new_header = [c for c in COLUMNS if c in header or c in added]
    new_header += [c for c in header if c not in new_header]
    migrated = []
    for line, fields in body:
        if len(fields) != len(header):
            raise _fail(path, f"line {line}: {len(fields)} fields where the header has "
                              f"{len(header)}")
        values = dict(zip(header, fields), schema_version=str(SCHEMA_VERSION))
        migrated.append((line, [values.get(c, "") for c in new_header]))
    notes.append(f"{path.name}: written with schema version {old}, read as {SCHEMA_VERSION} "
                 f"(columns added since are empty: {', '.join(added) or 'none'})")
    return new_header, migrated


def read_results(path: Path, with_samples: bool = True, strict: bool = True) -> ResultsFile:
    """Read and check a results CSV (module docstring) and, unless with_samples is False, its
    samples file. Raises UserError before anything is printed or written."""
    text = _text(path)
    records = _records(path, text)
    if not records:
        raise _fail(path, "is empty")
    header = records[0][1]
    absent = [c for c in OUR_COLUMNS if c not in header]
    if absent:
        raise _fail(path, f"is not an infer-opt results CSV (no column {', '.join(absent)})")
    body = records[1:]
    notes: list[str] = []
    if body and (len(body[-1][1]) < len(header) or not text.endswith(("\n", "\r"))):
        line = body.pop()[0]
        notes.append(f"{path.name}: line {line} was cut mid-row (an interrupted write) and is "
                     f"dropped; {len(body)} whole rows read")
    if not body:
        raise _fail(path, "has a header but no rows" + (" (its only row was cut mid-write)"
                                                          if notes else ""))
    at = header.index("schema_version")
    versions = sorted({f[at] if len(f) > at else "" for _, f in body})
    if versions != [str(SCHEMA_VERSION)]:
        header, body = _migrate(path, header, body, versions, notes)
    _check_header(path, header)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for line, fields in body:
        if len(fields) != len(header):
            raise _fail(path, f"line {line}: {len(fields)} fields where the header has "
                              f"{len(header)}")
        row = dict(zip(header, fields))
        _check_row(path, line, row, seen)
        rows.append(row)
    run = ResultsFile(path=path, columns=header, rows=rows, notes=notes)
    _check_values(run, strict)
    if with_samples:
        _read_samples(run, strict)
    return run


def _check_values(run: ResultsFile, strict: bool) -> None:
    """Measured cells must be numbers, not NaN; core and timed ones >= 0; timed ones also finite
    (KL may be inf: non-finite logits, kept visible). Lenient: the cell is read as empty, with
    a note."""
    for name in run.columns:
        meaning = column(name)
        if meaning.better is None:
            continue
        for row in run.rows:
            text = row[name].strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            # A plugin's own metric may be signed (a delta); times, rates, sizes are not.
            signed = not meaning.timed and name not in TABLE
            if (not math.isnan(value) and (value >= 0 or signed)
                    and (math.isfinite(value) or not meaning.timed)):
                continue
            what = ("a finite number >= 0" if meaning.timed
                    else "a number" if signed else "a number >= 0")
            problem = (f"{run.path}: cell {row['cell_index']} ({row['variant']}): {name} is "
                       f"{text!r}, not {what}")
            if strict:
                raise UserError(FIELD, f"{problem} (--point-ratios reads it as empty)")
            run.notes.append(f"{problem}: read as empty")
            row[name] = ""


# --- samples -----------------------------------------------------------------------------------

def samples_problem(s: Any) -> str | None:
    """What is wrong with one samples line's shape (module docstring), or None."""
    if not isinstance(s, dict) or "cell_index" not in s:
        return "not an object with a cell_index"
    runs = s.get("runs")
    n = None
    if runs is not None:
        if not isinstance(runs, dict) or not all(isinstance(v, list) for v in runs.values()):
            return "'runs' is not an object of lists"
        lengths = {len(v) for v in runs.values()}
        if len(lengths) > 1:
            return "the lists in 'runs' differ in length"
        n = lengths.pop() if lengths else 0
        for key, values in runs.items():
            if not all(_is_number(v) for v in values):
                return f"runs[{key!r}] holds a value that is not a finite number"
        rounds = runs.get("round")
        if rounds is not None and (not all(isinstance(r, int) for r in rounds)
                                   or len(set(rounds)) != len(rounds)):
            return "runs['round'] must be distinct integers"
    itl = s.get("itl_ms")
    if itl is not None:
        if not isinstance(itl, list) or not all(isinstance(g, list) and all(map(_is_number, g))
                                                for g in itl):
            return "'itl_ms' is not a list of lists of numbers"
        if n is not None and len(itl) != n:
            return f"'itl_ms' has {len(itl)} runs where 'runs' has {n}"
    reqs = s.get("requests")
    if reqs is not None:
        if not isinstance(reqs, list) or not all(isinstance(r, dict) for r in reqs):
            return "'requests' is not a list of objects"
        for r in reqs:
            for key, v in r.items():
                if key.endswith("_ms") and not (v is None or _is_number(v)
                                                or isinstance(v, list) and all(map(_is_number, v))):
                    return f"a request's {key!r} is not a number"
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_samples(run: ResultsFile, strict: bool) -> None:
    sp = samples_path_for(run.path)
    summary_only = f"{run.path.name} has summary statistics only (no intervals)"

    def damaged(problem: str) -> None:
        if strict:
            raise UserError(FIELD, f"{problem}: timed metrics of {run.path.name} cannot be "
                                   f"judged (--point-ratios compares point values without it)")
        run.notes.append(f"{problem}: {summary_only}")

    if not sp.is_file():
        damaged(f"samples file {sp} is missing")
        return
    try:
        text = sp.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        damaged(f"samples file {sp} is unreadable ({type(exc).__name__})")
        return
    lines = text.splitlines()
    parsed: list[Any] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) and not text.endswith("\n"):
                run.notes.append(f"{sp.name}: line {i} was cut mid-write and is dropped")
                continue
            damaged(f"samples file {sp} is corrupt (line {i} is not JSON)")
            return
    known = {r["cell_index"] for r in run.rows}
    for s in parsed:
        problem = samples_problem(s)
        if problem is not None:
            cell = s.get("cell_index", "?") if isinstance(s, dict) else "?"
            if strict:
                raise UserError(FIELD, f"samples file {sp} is corrupt: cell {cell}: {problem} "
                                       f"(--point-ratios ignores the line)")
            run.notes.append(f"{sp.name}: samples of cell {cell} ignored ({problem})")
            continue
        if str(s["cell_index"]) in known:
            run.samples[str(s["cell_index"])] = s
    # Every ok row has its line; only the last row's may be missing: a run interrupted between
    # writing the row and its samples line.
    missing = [r["cell_index"] for r in run.rows
               if r["status"] == "ok" and r["cell_index"] not in run.samples]
    if missing == [run.rows[-1]["cell_index"]]:
        run.notes.append(f"{sp.name}: no line for cell {missing[0]}, the last row (an "
                         f"interrupted write): that row has summary statistics only")
    elif missing:
        damaged(f"samples file {sp} has no line for cell {', '.join(missing[:5])}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
