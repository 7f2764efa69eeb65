"""What load a cell serves. A workload kind describes the requests; any engine serves them.

Kinds register under the entry-point group `infer_opt.workloads` (static-batch, online, ...),
like plugins and engines. A kind is a frozen dataclass with:

    kind: str                      its registered name, in every row
    group_keys: tuple[str, ...]    keys a suite [[group]] may set for it
    needs_step_api: bool           True: it drives the decode loop (refused on engines without)
    from_group(group) -> list      workloads of one suite group (one per batch size, policy, ...)
    from_dict(d) / to_dict()       plain data for cells
    validate(max_context)          one-line UserError naming the key
    session(ctx) -> Session        the load on one loaded engine: warm_up(), run_once(round)
                                   per timed run, finish(row, samples) once at the end

Timed runs are not a fixed count: every workload carries the sampling rule's keys (`Sampled`),
and the runner asks for timed runs, interleaved with the other variants of the group, until
the rule is met (run/rounds.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from infer_opt.core import registry
from infer_opt.core.errors import UserError


class Session(Protocol):
    """One workload on one loaded engine, driven by the runner."""

    def warm_up(self) -> None:
        """Untimed runs that meet every shape the timed runs will meet."""

    def run_once(self, round_index: int) -> float:
        """One timed run; returns its figure for the sampling rule (TPOT in ms)."""

    def finish(self, row: dict[str, Any], samples: dict[str, Any]) -> None:
        """Statistics of all timed runs into the row; raw per-run values into samples."""


class Workload(Protocol):
    kind: str
    needs_step_api: bool
    uses_generate: bool

    def validate(self, max_context: int | None = None) -> None: ...
    def to_dict(self) -> dict[str, Any]: ...
    def session(self, ctx: Any) -> Session: ...


@dataclass(frozen=True)
class Sampled:
    """How many timed runs a cell gets, in the manner of MLPerf's minimum duration and pyperf's
    runs: at least `min_repeats` runs and `min_timed_s` seconds of them; then more until the
    95% bootstrap interval of the median TPOT is within +-`target_precision_pct` of it; never
    more than `max_repeats` runs or `max_timed_s` seconds (min_repeats wins over both caps)."""

    min_repeats: int = 5
    max_repeats: int = 20
    min_timed_s: float = 0.0
    max_timed_s: float = 60.0
    target_precision_pct: float = 2.0

    sampling_keys: ClassVar[tuple[str, ...]] = ("min_repeats", "max_repeats", "min_timed_s",
                                                "max_timed_s", "target_precision_pct")

    def validate_sampling(self) -> None:
        for name in ("min_repeats", "max_repeats"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"workload.{name}", f"must be an integer >= 1, got {v!r}")
        if self.max_repeats < self.min_repeats:
            raise UserError("workload.max_repeats", f"must be >= min_repeats "
                                                    f"({self.min_repeats}), got {self.max_repeats}")
        for name in ("min_timed_s", "max_timed_s", "target_precision_pct"):
            v = getattr(self, name)
            if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                    or v < 0):
                raise UserError(f"workload.{name}", f"must be a number >= 0, got {v!r}")

    @classmethod
    def sampling_from_group(cls, group: dict[str, Any]) -> dict[str, Any]:
        return {k: group[k] for k in cls.sampling_keys if k in group}


def workload_class(kind: str) -> Any:
    return registry.load("workload", kind)


def workload_from_dict(d: dict[str, Any]) -> Any:
    kind = d.get("kind", "static-batch")
    if kind not in registry.names("workload"):
        raise UserError("workload", f"unknown kind {kind!r}; known: "
                                    f"{', '.join(registry.names('workload'))}")
    return workload_class(kind).from_dict(d)
