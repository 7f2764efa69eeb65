"""What load a cell serves. A workload kind describes the requests; any engine serves them.

Kinds register under the entry-point group `infer_opt.workloads` (static-batch, online, ...),
like plugins and engines. A kind is a frozen dataclass with:

    kind: str                      its registered name, in every row
    group_keys: tuple[str, ...]    keys a suite [[group]] may set for it
    needs_step_api: bool           True: it drives the decode loop (refused on engines without)
    from_group(group) -> list      workloads of one suite group (one per batch size, policy, ...)
    from_dict(d) / to_dict()       plain data for cells
    validate(max_context)          one-line UserError naming the key
    measure(ctx, row, samples)     serve the load on the loaded engine, fill the row
"""

from __future__ import annotations

from typing import Any, Protocol

from infer_opt.core import registry
from infer_opt.core.errors import UserError


class Workload(Protocol):
    kind: str
    needs_step_api: bool

    def validate(self, max_context: int | None = None) -> None: ...
    def to_dict(self) -> dict[str, Any]: ...
    def measure(self, ctx: Any, row: dict[str, Any], samples: dict[str, Any]) -> None: ...


def workload_class(kind: str) -> Any:
    return registry.load("workload", kind)


def workload_from_dict(d: dict[str, Any]) -> Any:
    kind = d.get("kind", "static-batch")
    if kind not in registry.names("workload"):
        raise UserError("workload", f"unknown kind {kind!r}; known: "
                                    f"{', '.join(registry.names('workload'))}")
    return workload_class(kind).from_dict(d)
