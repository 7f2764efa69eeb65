"""Runtimes that serve a workload: torch here; engines (onnxruntime, vllm) register the same way.

A backend is found by the name in `Settings.backend` through the entry-point group
`infer_opt.engines`, so the core never imports an engine it does not use.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from infer_opt.core.errors import UserError

ENTRY_POINT_GROUP = "infer_opt.engines"


def backend_class(name: str) -> Any:
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in eps:
        raise UserError("backend", f"unknown backend {name!r}; known: {', '.join(sorted(eps))}")
    return eps[name].load()
