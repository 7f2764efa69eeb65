"""What load a cell serves. A workload kind describes the requests; any engine serves them.

Kinds register under the entry-point group `infer_opt.workloads` (static-batch, online, ...),
like plugins and engines. A kind is a frozen dataclass with:

    kind: str                      its registered name, in every row
    needs_step_api: bool           True: it drives the decode loop (refused on engines without)
    from_group(group) -> list      workloads of one suite group (one per batch size, policy, ...)
    from_dict(d) / to_dict()       plain data for cells
    params: tuple[Param, ...]      its fields, declared as core/params.Param (checked by validate)
    group_params() -> tuple        the keys a suite [[group]] may set, as Params (lists expand)
    validate(max_context)          one-line UserError naming the key
    session(ctx) -> Session        the load on one loaded engine: warm_up(), run_once(round)
                                   per timed run, finish(row, samples) once at the end

Timed runs are not a fixed count: every workload carries the sampling rule's keys (`Sampled`),
and the runner asks for timed runs, interleaved with the other variants of the group, until
the rule is met (run/rounds.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from infer_opt.core import registry
from infer_opt.core.errors import UserError
from infer_opt.core.params import Param


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


# Ceilings on what makes a cell run long: above them a cell may never end on a real machine,
# so a suite is refused unless it says `allow_long_cells = true` (or the command line passes
# --allow-long-cells). Not limits of the code: a statement of what a benchmark cell should be.
CEILINGS: dict[str, float] = {"min_repeats": 1000, "max_repeats": 1000, "min_timed_s": 3600.0,
                              "max_timed_s": 3600.0, "warmup_runs": 100, "num_requests": 10000,
                              "warmup_requests": 1000}

SAMPLING_PARAMS: tuple[Param, ...] = (
    Param("min_repeats", int, 5, "timed runs at least", minimum=1),
    Param("max_repeats", int, 20, "timed runs at most", minimum=1),
    Param("min_timed_s", float, 0.0, "seconds of timed runs at least", minimum=0.0),
    Param("max_timed_s", float, 60.0, "seconds of timed runs at most", minimum=0.0),
    Param("target_precision_pct", float, 2.0, "stop once the 95% interval of the median TPOT "
          "is within +- this", minimum=0.0, maximum=100.0),
)


def check_fields(obj: Any, params: tuple[Param, ...], where: str = "workload") -> None:
    """Every declared field of a workload dataclass checked against its Param (one idiom for
    plugins, engines, suites and workloads: core/params.py)."""
    for p in params:
        p.check(getattr(obj, p.name), where)


def check_ceilings(obj: Any, where: str = "workload") -> None:
    """A one-line UserError for a value above its CEILINGS entry (see CEILINGS)."""
    for name, top in CEILINGS.items():
        value = getattr(obj, name, None)
        if isinstance(value, (int, float)) and value > top:
            raise UserError(where, f"{name} = {value!r} is above the ceiling of {top:g} for one "
                                   "cell; set allow_long_cells = true in the suite (or pass "
                                   "--allow-long-cells) if you mean it")


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

    sampling_keys: ClassVar[tuple[str, ...]] = tuple(p.name for p in SAMPLING_PARAMS)

    def validate_sampling(self) -> None:
        """What the Params cannot say alone (each field is in the workload's `params`)."""
        if self.max_repeats < self.min_repeats:
            raise UserError("workload", f"max_repeats must be >= min_repeats "
                                        f"({self.min_repeats}), got {self.max_repeats}")


def workload_class(kind: str) -> Any:
    return registry.load("workload", kind)


def workload_from_dict(d: dict[str, Any]) -> Any:
    kind = d.get("kind", "static-batch")
    if kind not in registry.names("workload"):
        raise UserError("workload", f"unknown kind {kind!r}; known: "
                                    f"{', '.join(registry.names('workload'))}")
    return workload_class(kind).from_dict(d)
