"""One way to register things: Python entry-point groups.

Plugins (optimizations), engines, workload kinds, serving policies and executors are all found
the same way, and infer-opt's own ones are declared in its pyproject.toml exactly as a
third-party package declares its own (llm and pytest use the same pattern):

    [project.entry-points."infer_opt.plugins"]
    my-opt = "my_package.module:MyPlugin"

A name registered by two distributions resolves to the first one on sys.path, like an import.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from infer_opt.core.errors import UserError

# kind -> entry-point group
GROUPS = {
    "plugin": "infer_opt.plugins",
    "engine": "infer_opt.engines",
    "workload": "infer_opt.workloads",
    "policy": "infer_opt.policies",
    "executor": "infer_opt.executors",
}


@lru_cache(maxsize=None)
def _entries(kind: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUPS[kind]):
        found.setdefault(ep.name, ep)  # first distribution on sys.path wins
    return found


def names(kind: str) -> list[str]:
    """Registered names of one kind, sorted."""
    return sorted(_entries(kind))


@lru_cache(maxsize=None)
def load(kind: str, name: str) -> Any:
    """The object registered as `name`; a one-line UserError listing the known names."""
    entries = _entries(kind)
    if name not in entries:
        raise UserError(kind, f"unknown {kind} {name!r}; known: {', '.join(sorted(entries))}")
    return entries[name].load()


def load_all(kind: str) -> dict[str, Any]:
    return {name: load(kind, name) for name in names(kind)}


def clear() -> None:
    """Forget what was found (tests that install a distribution at run time)."""
    _entries.cache_clear()
    load.cache_clear()
