"""Typed parameters: a plugin's `name[key=value]` and an engine's options share one declaration.

    Param("sparsity", float, 0.5, "fraction of weights set to zero", minimum=0.0, maximum=0.95)

A value is checked against its declaration (type, choices, range; a number must be finite, a
string non-empty, a list non-empty with every element checked against `item`) and a misspelt
key is refused with the allowed keys, always as one line (UserError). Plugin parameters, engine
options, the suite header and workload keys are all declared this way.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infer_opt.core.errors import UserError

KINDS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number",
                          str: "a string", list: "a list"}


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # bool, int, float, str or list
    default: Any
    help: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    greater_than: float | None = None  # a strict lower bound (timeout_s > 0)
    # kind list: every element is checked against this declaration (its name is the list's).
    item: Param | None = None

    def check(self, value: Any, where: str) -> Any:
        """`value` converted to `kind` (an int is a valid float); UserError if it does not fit."""
        kind = self.kind
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if kind is not str and value is None and self.default is None:
            return None  # an option that may stay unset
        if not ok:
            what = KINDS.get(kind, kind.__name__)
            if kind is list and self.item is not None:
                what = f"a list of {KINDS.get(self.item.kind, self.item.kind.__name__)} values"
            raise UserError(where, f"{self.name} must be {what}, got {value!r}"[:300])
        if kind is float and not math.isfinite(value):
            raise UserError(where, f"{self.name} must be a finite number, got {value!r}")
        if kind is str and not value.strip():
            raise UserError(where, f"{self.name} must not be empty")
        if kind is list:
            if not value:
                raise UserError(where, f"{self.name} must be a non-empty list")
            if self.item is not None:
                value = [self.item.check(v, where) for v in value]
        if self.choices and value not in self.choices:
            raise UserError(where, f"{self.name} must be one of "
                                   f"{', '.join(map(str, self.choices))}; got {value!r}")
        if self.greater_than is not None and value <= self.greater_than:
            raise UserError(where, f"{self.name} must be > {self.greater_than:g}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise UserError(where, f"{self.name} must be >= {self.minimum:g}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise UserError(where, f"{self.name} must be <= {self.maximum:g}, got {value!r}")
        return value

    def describe(self) -> str:
        extra = f" ({'|'.join(map(str, self.choices))})" if self.choices else ""
        return f"{self.name}={self.default!r}{extra}: {self.help}"


def parse_value(text: str) -> Any:
    """A value written in a variant string: true/false, an int, a float, else the text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip()


def check_all(declared: Sequence[Param], given: Mapping[str, Any], where: str,
              what: str = "parameter") -> dict[str, Any]:
    """Defaults overlaid with `given`, every key known and every value valid."""
    by_name = {p.name: p for p in declared}
    for key in given:
        if key not in by_name:
            allowed = ", ".join(sorted(by_name)) or "none"
            raise UserError(where, f"unknown {what} {key!r}; allowed: {allowed}")
    values = {p.name: copy.copy(p.default) for p in declared}  # a default list is not shared
    for key, value in given.items():
        values[key] = by_name[key].check(value, where)
    return values
