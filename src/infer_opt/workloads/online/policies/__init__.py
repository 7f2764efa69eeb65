"""Batching policies, one per module. Each is `serve(engine, requests, clock, opts, prefix)`:
it serves every request to completion on the real model, stamping tokens as they are ready."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

POLICIES = ("sequential", "dynamic", "continuous")


def policy(name: str) -> Callable[..., Any]:
    if name == "sequential":
        from infer_opt.workloads.online.policies.sequential import serve
    elif name == "dynamic":
        from infer_opt.workloads.online.policies.dynamic import serve
    elif name == "continuous":
        from infer_opt.workloads.online.policies.continuous import serve
    else:
        raise KeyError(name)
    return serve
