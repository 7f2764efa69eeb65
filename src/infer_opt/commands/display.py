"""How `run` and `sweep` show a run's progress on stderr (not a subcommand).

On a terminal: a live status line (rich) under the log, with the current group and workload,
round i of at most n, the variant being timed, elapsed and expected time; a line per finished
cell above it. Otherwise (a pipe, a file, CI): the plain lines only, one per finished cell.
The expected time assumes the cells left take as long as those done, and a workload's rounds
run to the sampling rule's cap; rounds that stop earlier make it an overestimate.
The live line is redrawn once a second by a thread of the coordinating process, while a
worker is timed: a few milliseconds of one core per second (off a terminal, nothing).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from infer_opt.run.progress import CellDone, Event, Loading, RunStarted, Timing


def cell_line(ev: CellDone) -> str:
    row = ev.row
    status = row.get("status", "?")
    if status == "ok" and row.get("decode_tokens_per_s") not in ("", None):
        detail = (f"decode {float(row['decode_tokens_per_s']):.1f} tok/s, TTFT p50 "
                  f"{float(row['ttft_ms_p50']):.1f} ms, n={row.get('timed_runs')}")
    elif status == "ok":
        detail = f"n={row.get('timed_runs')}"
    else:
        detail = str(row.get("reason", ""))
    total = f"/{ev.total}" if ev.total else ""
    return f"[{ev.done}{total}] {ev.cell.label()}: {status} {detail} ({ev.elapsed_s:.1f} s)"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Display:
    """Renders run/progress events; `live=None` decides by whether `stream` is a terminal."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.csv_path: Path | None = None  # known once the run has started writing
        self._total = 0
        self._done = 0
        self._timing: Timing | Loading | None = None
        self._started = False
        self._start = time.monotonic()
        self._live: Any = None
        self._console: Any = None
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream, highlight=False)
            self._live = Live(self, console=self._console, transient=True,
                              refresh_per_second=1, redirect_stdout=False,
                              redirect_stderr=False)
            self._live.start()

    def log(self, message: str) -> None:
        if self._console is not None:
            self._console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            print(message, file=self.stream, flush=True)

    def on_event(self, ev: Event) -> None:
        if isinstance(ev, RunStarted):
            self.csv_path, self._total, self._start = ev.csv_path, ev.cells, time.monotonic()
            self._started = True
        elif isinstance(ev, (Loading, Timing)):
            self._timing = ev
        elif isinstance(ev, CellDone):
            self._done = ev.done
            self._timing = None
            self.log(cell_line(ev))

    def status(self) -> str:
        """The live line: where the run is and how long it has left."""
        elapsed = time.monotonic() - self._start
        if not self._started:
            return f"checking the suite and the machine · {_clock(elapsed)}"
        parts = []
        t = self._timing
        done = float(self._done)
        if isinstance(t, Loading):
            parts.append(f"group {t.group or '-'} · loading {t.variant} ({t.index + 1} of "
                         f"{t.variants})")
        elif t is not None:
            parts.append(f"group {t.group or '-'} · workload {t.workload_index + 1}/"
                         f"{t.workloads} ({t.workload}) · round {t.round_index + 1} of "
                         f"<={t.max_rounds} · timing {t.variant}")
            done += t.cells * min(t.round_index / max(t.max_rounds, 1), 1.0)
        total = f"/{self._total}" if self._total else ""
        parts.append(f"{self._done}{total} cells · {_clock(elapsed)} elapsed")
        if self._total and done > 0:
            parts.append(f"~{_clock(elapsed * self._total / done)} expected")
        return " · ".join(parts)

    def __rich__(self) -> Any:
        from rich.text import Text

        return Text(self.status(), style="dim", no_wrap=True, overflow="ellipsis")

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> Display:
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.close()


@contextmanager
def displayed(suite: Any) -> Iterator[Display]:
    """The live display of a run or sweep; on Ctrl-C the rows already written get their table
    before the interrupt goes on (cli.py prints its one line)."""
    from infer_opt.results.table import write_table

    with Display() as display:
        try:
            yield display
        except KeyboardInterrupt:
            display.close()
            if display.csv_path is not None:
                write_table(display.csv_path, reference=suite.reference,
                            also=suite.also_reference)
            raise
