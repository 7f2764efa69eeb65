"""What a run reports while it goes: plain events, rendered by the command (commands/display.py).

The runner and the rounds only emit these; they never print a progress line themselves. An
executor that runs jobs elsewhere (Ray) reports the cells it gets back, not the rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from infer_opt.run.cell import Cell


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    csv_path: Path
    cells: int  # cells of the whole run
    jobs: int


@dataclass(frozen=True)
class Loading:
    """A job's worker for `variant` is loading its engine (run/rounds.py)."""

    group: str
    variant: str
    index: int  # 0-based, of the job's `variants`
    variants: int


@dataclass(frozen=True)
class Timing:
    """One timed run of `variant` is about to start (run/rounds.py)."""

    group: str
    workload: str  # the cell's label without the variant
    workload_index: int  # of the job's workloads
    workloads: int
    round_index: int  # 0-based
    max_rounds: int  # the sampling rule's cap (max_repeats): rounds end at or before it
    variant: str
    cells: int  # cells of this workload in the job (they finish together)


@dataclass(frozen=True)
class CellDone:
    done: int  # cells finished so far in the run, this one included
    total: int
    cell: Cell
    row: dict[str, Any]
    elapsed_s: float  # since the run's first job started


Event = Union[RunStarted, Loading, Timing, CellDone]
OnEvent = Callable[[Event], None]


def ignore(_event: Event) -> None:
    return None
