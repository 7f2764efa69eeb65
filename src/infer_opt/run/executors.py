"""Executors: how a run's cells reach a process.

An executor is a callable `(cells, timeout_s) -> iterable of (cell, row, samples)`; rows may come
back in any order (each carries its `cell_index`). Every executor ends in `cell.run_cell`, so a
cell is the same plain data whichever one runs it.

    local  one forked child per cell on this machine (runner.local_executor, the default)
    ray    one Ray task per cell, on a local Ray or an existing cluster (ray_executor.py)
"""

from __future__ import annotations

from infer_opt.core.errors import UserError
from infer_opt.run.runner import Executor, local_executor

EXECUTORS = ("local", "ray")


def make_executor(name: str, address: str | None = None, max_retries: int = 1) -> Executor:
    """The executor called `name`. Bad names and missing packages fail here, before any file."""
    if name == "local":
        if address:
            raise UserError("address", "only used with --executor ray")
        return local_executor
    if name == "ray":
        from infer_opt.run.ray_executor import RayExecutor

        return RayExecutor(address=address, max_retries=max_retries)
    raise UserError("executor", f"unknown executor {name!r}; use one of: {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "Executor", "local_executor", "make_executor"]
