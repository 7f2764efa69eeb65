"""Ending a run on a fault without leaving half a result behind.

Ctrl-C (SIGINT) and SIGTERM raise `Interrupted` in the main thread (a KeyboardInterrupt, so
every `finally` runs: workers are killed, the writer is closed); a second signal while the run
is already ending is dropped, so cleanup is not cut short. Inside `held()` a signal waits until
the block ends: a row is written whole or not at all. Workers ignore SIGINT (run/worker.py):
the terminal sends it to the whole process group, and the coordinator ends them itself.

A results file that cannot be written (a full disk) raises `WriteFailed`: the run stops, the
rows written before stay, the half-written one is cut off.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the process exits with 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class WriteFailed(Exception):
    """A results file could not be written (e.g. ENOSPC); one line for the user, exit 1."""

    exit_code = 1


_held = 0  # depth of held() blocks
_pending: int | None = None  # a signal that arrived inside held()
_fired = False  # Interrupted was raised once: the run is ending


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    global _pending, _fired
    if _fired:
        return
    if _held:
        _pending = signum
        return
    _fired = True
    raise Interrupted(signum)


Handlers = dict[int, Any]


def install() -> Handlers:
    """SIGINT and SIGTERM raise Interrupted from now on (main thread only); returns the
    handlers they had, for restore()."""
    global _held, _pending, _fired
    _held, _pending, _fired = 0, None, False
    return {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}


def restore(handlers: Handlers) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


@contextmanager
def held() -> Iterator[None]:
    """A signal arriving inside waits until the block is done, then interrupts."""
    global _held, _pending, _fired
    _held += 1
    try:
        yield
    finally:
        _held -= 1
    if not _held and _pending is not None and not _fired:
        signum, _pending = _pending, None
        _fired = True
        raise Interrupted(signum)


def ignore_interrupts() -> None:
    """In a worker: the coordinator ends it; a Ctrl-C meant for the run must not print here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# Where the full tracebacks of failed cells go: <run_id>.errors.log beside the results (set by
# the runner for its workers); the row's `reason` holds one line, the terminal none.
ERROR_LOG_ENV = "INFER_OPT_ERROR_LOG"


def record_traceback() -> None:
    """Append the current exception's traceback to the run's error log (never the terminal;
    INFER_OPT_DEBUG=1 also prints it)."""
    import traceback

    record_text(traceback.format_exc())


def record_text(text: str) -> None:
    """Append a traceback formatted earlier (a plugin that raised while its stack was built,
    core/stack.py) to the run's error log, as record_traceback does."""
    import os

    path = os.environ.get(ERROR_LOG_ENV)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f"--- pid {os.getpid()}\n{text}")
        except OSError:
            pass  # a full disk must not turn a failed cell into a crashed run
    if os.environ.get("INFER_OPT_DEBUG"):
        print(text, file=sys.stderr, end="")
