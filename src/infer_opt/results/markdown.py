"""The one markdown table helper: every table infer-opt prints or writes goes through it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table, no trailing newline. Cells are printed as given
    (already formatted by the caller: numbers keep their digits); a '|' inside a cell is
    escaped so it cannot split the row."""
    from tabulate import tabulate

    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    return tabulate([[cell(v) for v in r] for r in rows], headers=[cell(h) for h in head],
                    tablefmt="github", disable_numparse=True)
