"""Run each job (a suite group in interleaved rounds) as a Ray task, on a local Ray started
for the run or on an existing cluster.

A task asks Ray for what its job needs (one GPU for a CUDA job, `threads` CPUs otherwise) and
runs the job exactly as the local executor does, only on the node Ray picked: `rounds.run_job`,
with one worker process per variant forked from a forkserver that preloaded torch. So a crash,
a hang or a peak-memory figure stays the variant's own even though Ray reuses its worker
processes, and the variants of a group are measured side by side on one node. Rows come back
as tasks finish (any order; each keeps its `cell_index`). A lost task (worker or node died,
Ray's out-of-memory killer) is retried at most `max_retries` times, then its rows are
`failed`.

Ray is optional (`pip install 'infer-opt[cluster]'`) and imported only when this executor runs.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from infer_opt.core.errors import UserError
from infer_opt.run.cell import one_line
from infer_opt.run.progress import OnEvent, ignore
from infer_opt.run.rounds import CellResult, Job, failed_row, run_job

INSTALL_HINT = "pip install 'infer-opt[cluster]' (or make setup with 'cluster' in EXTRAS)"
# Added to a job's budget (its workers' requests each have the suite's timeout, enforced on the
# node as the local executor does) for worker start, forkserver preload and result transfer.
# Past it the driver gives up on the task (node or raylet likely gone) and cancels it.
GRACE_S = 120.0
# A job's budget: this many requests (load, warm-up, timed runs, finish) per cell, each within
# the suite's timeout. Generous on purpose: it only catches a node that stopped answering.
REQUESTS_PER_CELL = 40
POLL_S = 2.0
# A local Ray started by us: small object store (rows and samples are kilobytes).
OBJECT_STORE_BYTES = 128 * 2**20
# Ray >= 2.5x turns on token auth for a new local cluster and, unless a token is given, writes
# one to ~/.ray/auth_token. We hand it one in the environment instead: one per driver process,
# because Ray's C++ side caches the token it first read.
_TOKEN = secrets.token_hex(32)
_ENV_KEYS = ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED")


def ray_resources(job: Job) -> dict[str, float]:
    """What one job asks Ray for: a GPU (and a CPU to drive it) on CUDA, else its threads."""
    cell = job.cells[0]
    if cell.device.startswith("cuda"):
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": cell.threads}


def _fits(need: dict[str, float], node: dict[str, float]) -> int:
    """How many such cells one node (its total resources) holds at once."""
    counts = [int(node.get(key, 0.0) // amount)
              for opt, key in (("num_cpus", "CPU"), ("num_gpus", "GPU"))
              if (amount := need.get(opt, 0.0)) > 0]
    return min(counts) if counts else 1


def _describe(need: dict[str, float]) -> str:
    names = {"num_cpus": "CPU", "num_gpus": "GPU"}
    return ", ".join(f"{v:g} {names.get(k, k)}" for k, v in need.items())


# --- on the worker -----------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _node_bandwidth_gb_per_s(device: str, threads: int) -> float:
    from infer_opt.core.roofline import measure_bandwidth_gb_per_s
    from infer_opt.run.worker import process_context

    # In a child of its own: the 512 MiB probe (and, on a GPU, a CUDA context) must not stay
    # in this long-lived Ray worker while the node's jobs run.
    with process_context().Pool(1) as pool:
        return float(pool.apply(measure_bandwidth_gb_per_s, (device, threads)))


def run_job_task(job_dict: dict[str, Any], driver_host: str) -> list[CellResult]:
    """The Ray task. Never raises for a cell's own failure: the rows say what happened."""
    job = Job.from_dict(job_dict)
    if socket.gethostname() != driver_host:
        # The driver measured its own memory bandwidth; roofline_pct must use this node's.
        bandwidth = _node_bandwidth_gb_per_s(job.cells[0].device, job.cells[0].threads)
        for cell in job.cells:
            cell.bandwidth_gb_per_s = bandwidth
    # Set by Ray for this task (the GPU it was given); the forkserver keeps the environment of
    # the task that started it and Ray reuses workers, so each job hands them on explicitly.
    # The task's GPU (None: unset it in the workers); server logs stay the driver's affair.
    job.env = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    return list(run_job(job))


def _failed_rows(job: Job, reason: str) -> list[CellResult]:
    return [failed_row(cell, reason) for cell in job.cells]


# --- on the driver -----------------------------------------------------------------------

def _lost_reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if cause is not None:  # RayTaskError: the task itself raised (e.g. infer-opt not on a node)
        return f"ray task raised {one_line(cause)}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"ray task lost: {type(exc).__name__}: {first}"[:300]


def _check_reachable(address: str) -> None:
    """A typo'd or stopped cluster: one line before any file is written, not Ray's retries."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError("address", f"expected HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError("address", f"no Ray cluster reachable at {address} ({exc.strerror or exc}); "
                        "start one with `ray start --head`") from None


class RayExecutor:
    """`infer-opt run --executor ray [--address HOST:6379]`: one Ray task per job."""

    def __init__(self, address: str | None = None, max_retries: int = 1,
                 num_cpus: int | None = None) -> None:
        if importlib.util.find_spec("ray") is None:
            raise UserError("executor", f"'ray' needs the Ray package, not installed here: "
                            f"{INSTALL_HINT}")
        if max_retries < 0:
            raise UserError("max_retries", f"must be >= 0, got {max_retries}")
        if address:
            _check_reachable(address)
        self.address = address
        self.max_retries = max_retries
        self.num_cpus = num_cpus  # local Ray only; None = this machine's CPU count
        self._ray: Any = None  # the Ray module while session() is open

    def __call__(self, jobs: list[Job], on_event: OnEvent = ignore) -> Iterator[CellResult]:
        """Rounds run on the nodes: progress shows each job's cells as they come back."""
        if self._ray is not None:
            yield from self._stream(self._ray, jobs)
            return
        with self.session() as ray:
            yield from self._stream(ray, jobs)

    @contextmanager
    def session(self) -> Iterator[Any]:
        """Connects to `address`, or starts a local Ray whose files live in a temp dir of this
        run (never the home directory) and is shut down at the end. Calls made while it is
        open share it (`infer-opt sweep` sends one small job per probe)."""
        if self._ray is not None:
            yield self._ray
            return
        saved = {k: os.environ.get(k) for k in _ENV_KEYS}
        tmp: str | None = None
        started = False
        try:
            if self.address is None:
                # Short path: Ray puts unix sockets under it (108-byte limit).
                tmp = tempfile.mkdtemp(prefix="infer-opt-ray-")
                os.environ["RAY_TMPDIR"] = tmp
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                if "RAY_AUTH_MODE" not in os.environ:
                    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=_TOKEN)
            import ray

            if not ray.is_initialized():
                if self.address is None:
                    ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1,
                             include_dashboard=False, _temp_dir=tmp,
                             object_store_memory=OBJECT_STORE_BYTES,
                             _system_config={"task_oom_retries": self.max_retries})
                else:
                    try:
                        ray.init(address=self.address)
                    except (ConnectionError, RuntimeError) as exc:
                        raise UserError("address", f"cannot join the Ray cluster at "
                                        f"{self.address}: {one_line(exc)}") from None
                started = True
            self._ray = ray
            yield ray
        finally:
            self._ray = None
            if started:
                import ray

                ray.shutdown()  # stops a local Ray; only disconnects from a cluster
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def _stream(self, ray: Any, jobs: list[Job]) -> Iterator[CellResult]:
        task = ray.remote(run_job_task)
        driver_host = socket.gethostname()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        queue = deque(jobs)
        # ref -> (job, monotonic deadline). Only as many tasks are submitted as the cluster can
        # run at once, so a deadline counts from (about) when its task could start.
        pending: dict[Any, tuple[Job, float]] = {}
        try:
            while queue or pending:
                while queue:
                    job = queue[0]
                    need = ray_resources(job)
                    room = sum(_fits(need, n) for n in nodes)
                    if room == 0:
                        queue.popleft()
                        yield from _failed_rows(job, f"infeasible: the job asks for "
                                                     f"{_describe(need)}; no Ray node has that")
                        continue
                    if len(pending) >= room:
                        break
                    queue.popleft()
                    ref = task.options(**need, max_retries=self.max_retries,
                                       retry_exceptions=False).remote(job.to_dict(), driver_host)
                    budget_s = GRACE_S + job.timeout_s * REQUESTS_PER_CELL * len(job.cells)
                    pending[ref] = (job, time.monotonic() + budget_s)
                if not pending:
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    job, _deadline = pending.pop(ref)
                    try:
                        rows = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        rows = _failed_rows(job, _lost_reason(exc))
                    yield from rows
                now = time.monotonic()
                for ref, (job, deadline) in list(pending.items()):
                    if now > deadline:
                        ray.cancel(ref, force=True)
                        del pending[ref]
                        yield from _failed_rows(job, "timeout: no result from its Ray task "
                                                     "in its budget; cancelled")
        finally:
            for ref in pending:  # interrupted: free the cluster
                ray.cancel(ref, force=True)
