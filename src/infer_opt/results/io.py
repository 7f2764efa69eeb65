"""Writing a run's files: rows appear as cells finish, nothing is ever overwritten.

results/<run_id>.csv            one row per cell (schema.COLUMNS)
results/<run_id>.samples.jsonl  raw per-request / per-token samples, one line per cell
results/<run_id>.md             the comparison table, written when the run ends
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infer_opt.core.schema import COLUMNS, check_row


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class RunWriter:
    def __init__(self, out_dir: Path, run_id: str, columns: Sequence[str] = COLUMNS) -> None:
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


def read_samples(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
