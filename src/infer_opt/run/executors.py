"""Executors: how a run's jobs reach a machine.

A job (run/rounds.py) is one group's variants x workloads: one worker process per variant, all
loaded, timed in interleaved rounds. An executor is a callable `(jobs, on_event) -> iterable of CellResult`;
results may come back in any order (each carries its cell). Every executor ends in
`rounds.run_job`, so a job is the same plain data whichever one runs it.

Executors register under the entry-point group `infer_opt.executors` as factories
`make(address=None, max_retries=1) -> Executor`; bad options fail in the factory, before any
file is written:

    local  every job on this machine, one after the other (runner.local_executor, the default)
    ray    one Ray task per job, on a local Ray or an existing cluster (ray_executor.py)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from infer_opt.core import registry
from infer_opt.core.errors import UserError
from infer_opt.run.runner import Executor, local_executor


def make_local(address: str | None = None, max_retries: int = 1) -> Executor:
    if address:
        raise UserError("address", "only used with --executor ray")
    return local_executor


def make_executor(name: str, address: str | None = None, max_retries: int = 1) -> Executor:
    """The executor called `name` (registered factory), built with its options."""
    return registry.load("executor", name)(address=address, max_retries=max_retries)


@contextmanager
def opened(executor: Executor) -> Iterator[Executor]:
    """The executor with its session open for several calls (Ray: one cluster connection for
    all of a sweep's probes); an executor without a session is used as it is."""
    session = getattr(executor, "session", None)
    if session is None:
        yield executor
        return
    with session():
        yield executor


__all__ = ["Executor", "local_executor", "make_executor", "make_local", "opened"]
