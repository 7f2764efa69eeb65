"""One way to register things: Python entry-point groups.

Plugins (optimizations), engines, workload kinds, serving policies and executors are all found
the same way, and infer-opt's own ones are declared in its pyproject.toml exactly as a
third-party package declares its own (llm and pytest use the same pattern):

    [project.entry-points."infer_opt.plugins"]
    my-opt = "my_package.module:MyPlugin"

Names are owned. A name registered by two distributions is refused wherever it is used (one
line naming both), never resolved by sys.path order: a row named `kv-cache` must have run
infer-opt's kv-cache. A third party that means to replace a name says so on the registered
class:

    class MyKVCache(Plugin):
        name = "kv-cache"
        replaces = "kv-cache"   # explicit: this distribution's code runs under the name

and every row records which distribution and version provided each part of its variant
(`plugin_sources`). An entry point that fails to import is not fatal: the name is listed as
unavailable with the reason (`problems`), and only a variant that names it is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
# The distribution whose names cannot be shadowed.
BUILTIN = "infer-opt"


@dataclass(frozen=True)
class Entry:
    """One registered name: the entry point that provides it, and whose it is."""

    name: str
    ep: EntryPoint
    dist: str  # distribution name, e.g. "infer-opt"
    version: str
    replaced: str = ""  # "infer-opt 0.1.0" when this entry explicitly replaces another's

    @property
    def source(self) -> str:
        own = f"{self.dist} {self.version}"
        return f"{own} (replaces {self.replaced})" if self.replaced else own


def _dist(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "?"
    return str(dist.metadata["Name"] or dist.name), str(dist.version)


@lru_cache(maxsize=None)
def _scan(kind: str) -> tuple[dict[str, Entry], dict[str, str]]:
    """(entries by name, reason by name for names that cannot be used)."""
    by_name: dict[str, list[Entry]] = {}
    for ep in entry_points(group=GROUPS[kind]):
        dist, version = _dist(ep)
        entries = by_name.setdefault(ep.name, [])
        # One distribution seen twice on sys.path (an editable install and a copy) is one owner.
        if not any(e.dist == dist and e.ep.value == ep.value for e in entries):
            entries.append(Entry(ep.name, ep, dist, version))
    found: dict[str, Entry] = {}
    broken: dict[str, str] = {}
    for name, entries in by_name.items():
        if len(entries) == 1:
            found[name] = entries[0]
            continue
        chosen, why = _arbitrate(kind, name, entries)
        if chosen is None:
            broken[name] = why
        else:
            found[name] = chosen
    return found, broken


def _arbitrate(kind: str, name: str, entries: list[Entry]) -> tuple[Entry | None, str]:
    """Two or more distributions register `name`: one third party that declares
    `replaces = name` takes it over (recorded); anything else is refused."""
    owners = " and ".join(f"{e.dist} {e.version} ({e.ep.value})" for e in entries)
    refusal = (f"{kind} {name!r} is registered by {owners}; a name has one owner (a "
               f"replacement declares `replaces = {name!r}` on its class; or uninstall one)")
    claims: list[Entry] = []
    for e in entries:
        if e.dist == BUILTIN:
            continue
        try:
            obj = e.ep.load()
        except Exception:  # noqa: BLE001 - a broken claimant claims nothing
            continue
        if getattr(obj, "replaces", None) == name:
            claims.append(e)
    if len(claims) != 1:
        return None, refusal
    winner = claims[0]
    others = ", ".join(f"{e.dist} {e.version}" for e in entries if e is not winner)
    return Entry(name, winner.ep, winner.dist, winner.version, replaced=others), ""


def names(kind: str) -> list[str]:
    """Registered names of one kind with one owner, sorted (importing them may still fail:
    see `problems`)."""
    found, _ = _scan(kind)
    return sorted(found)


def all_names(kind: str) -> list[str]:
    """Every registered name, usable or not."""
    found, broken = _scan(kind)
    return sorted({*found, *broken})


# kind -> name -> why its entry point failed to import (filled by `load`).
_IMPORT_ERRORS: dict[str, dict[str, str]] = {}


def _import_errors(kind: str) -> dict[str, str]:
    return _IMPORT_ERRORS.setdefault(kind, {})


def problems(kind: str) -> dict[str, str]:
    """Names that cannot be used, with the reason (name clash, or an import that fails).
    Imports every entry of the kind to find out."""
    found, broken = _scan(kind)
    for name in found:
        try:
            load(kind, name)
        except UserError:
            pass
    return dict(sorted({**broken, **_import_errors(kind)}.items()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@lru_cache(maxsize=None)
def load(kind: str, name: str) -> Any:
    """The object registered as `name`; a one-line UserError when it is unknown, registered
    twice, or fails to import."""
    found, broken = _scan(kind)
    if name in broken:
        raise UserError(kind, broken[name])
    errors = _import_errors(kind)
    if name in errors:
        raise UserError(kind, errors[name])
    if name not in found:
        raise UserError(kind, f"unknown {kind} {name!r}; known: {', '.join(names(kind))}")
    entry = found[name]
    try:
        return entry.ep.load()
    except Exception as exc:  # noqa: BLE001 - a third party's import error is data, not a crash
        errors[name] = (f"{kind} {name!r} from {entry.dist} {entry.version} cannot be imported "
                        f"({_first_line(exc)})")
        raise UserError(kind, errors[name]) from None


def load_all(kind: str) -> dict[str, Any]:
    """Every usable name of the kind, loaded; broken ones are left out (see `problems`)."""
    out: dict[str, Any] = {}
    for name in all_names(kind):
        try:
            out[name] = load(kind, name)
        except UserError:
            pass
    return out


def source(kind: str, name: str) -> str:
    """'dist version' of the code registered as `name` (with 'replaces ...' when it took a
    name over); '' when the name is not registered."""
    found, _ = _scan(kind)
    entry = found.get(name)
    return entry.source if entry is not None else ""


def sources_json(engine: str, plugins: list[str]) -> str:
    """What the `plugin_sources` column holds: {"engine torch": "infer-opt 0.1.0", ...}."""
    out = {f"engine {engine}": source("engine", engine)}
    out.update({p: source("plugin", p) for p in plugins})
    return json.dumps(out, sort_keys=True)


def clear() -> None:
    """Forget what was found (tests that install a distribution at run time)."""
    _scan.cache_clear()
    load.cache_clear()
    _IMPORT_ERRORS.clear()
