"""Run each cell as a Ray task, on a local Ray started for the run or on an existing cluster.

A task asks Ray for what its cell needs (one GPU for a CUDA cell, `threads` CPUs otherwise) and
runs the cell exactly as the local executor does, only on the node Ray picked: in a child forked
from a forkserver that preloaded torch, calling `cell.run_cell` unchanged. So a crash, a hang or
a peak-memory figure stays the cell's own even though Ray reuses its worker processes. Rows come
back as tasks finish (any order; each keeps its `cell_index`). A lost task (worker or node died,
Ray's out-of-memory killer) is retried at most `max_retries` times, then becomes a `failed` row.

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
from infer_opt.run.cell import Cell, one_line
from infer_opt.run.runner import cell_child, failed_row, run_one_local

INSTALL_HINT = "pip install 'infer-opt[cluster]' (or make setup with 'cluster' in EXTRAS)"
# Added to the cell's own timeout (which the worker enforces, as the local executor does) for
# worker start, forkserver preload and result transfer. Past it the driver gives up on the task
# (node or raylet likely gone) and cancels it.
GRACE_S = 120.0
POLL_S = 2.0
# A local Ray started by us: small object store (rows and samples are kilobytes).
OBJECT_STORE_BYTES = 128 * 2**20
# Ray >= 2.5x turns on token auth for a new local cluster and, unless a token is given, writes
# one to ~/.ray/auth_token. We hand it one in the environment instead: one per driver process,
# because Ray's C++ side caches the token it first read.
_TOKEN = secrets.token_hex(32)
_ENV_KEYS = ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED")

Row = tuple[Cell, dict[str, Any], dict[str, Any]]


def ray_resources(cell: Cell) -> dict[str, float]:
    """What one cell asks Ray for: a GPU (and a CPU to drive it) on CUDA, else its threads."""
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

# Set by Ray in the worker for each task (the GPU it was given). The forkserver keeps the
# environment of the task that started it and Ray reuses workers, so each cell gets them again.
TASK_ENV = ("CUDA_VISIBLE_DEVICES",)


def _child_on_worker(task_env: dict[str, str | None], cell_dict: dict[str, Any],
                     out_path: str) -> None:
    for key, value in task_env.items():  # before anything in the cell initializes CUDA
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    cell_child(cell_dict, out_path)  # which dies with the forkserver, so with this Ray worker


@functools.lru_cache(maxsize=4)
def _node_bandwidth_gb_per_s(device: str, threads: int) -> float:
    from infer_opt.core.roofline import measure_bandwidth_gb_per_s
    from infer_opt.run.runner import process_context

    # In a child of its own: the 512 MiB probe (and, on a GPU, a CUDA context) must not stay
    # in this long-lived worker while the node's cells run.
    with process_context().Pool(1) as pool:
        return float(pool.apply(measure_bandwidth_gb_per_s, (device, threads)))


def run_cell_task(cell_dict: dict[str, Any], timeout_s: float, driver_host: str
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Ray task. Never raises for a cell's own failure: the row says what happened."""
    if socket.gethostname() != driver_host:
        # The driver measured its own memory bandwidth; roofline_pct must use this node's.
        cell_dict = {**cell_dict, "bandwidth_gb_per_s": _node_bandwidth_gb_per_s(
            cell_dict["device"], cell_dict["threads"])}
    task_env = {key: os.environ.get(key) for key in TASK_ENV}
    return run_one_local(Cell(**cell_dict), timeout_s,
                         target=functools.partial(_child_on_worker, task_env))


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
    """`infer-opt run --executor ray [--address HOST:6379]`: one Ray task per cell."""

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

    def __call__(self, cells: list[Cell], timeout_s: float) -> Iterator[Row]:
        with self._session() as ray:
            yield from self._stream(ray, cells, timeout_s)

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """Connects to `address`, or starts a local Ray whose files live in a temp dir of this
        run (never the home directory) and is shut down at the end."""
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
            yield ray
        finally:
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

    def _stream(self, ray: Any, cells: list[Cell], timeout_s: float) -> Iterator[Row]:
        task = ray.remote(run_cell_task)
        driver_host = socket.gethostname()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        queue = deque(cells)
        # ref -> (cell, monotonic deadline). Only as many tasks are submitted as the cluster can
        # run at once, so a deadline counts from (about) when its task could start.
        pending: dict[Any, tuple[Cell, float]] = {}
        budget_s = timeout_s + GRACE_S
        try:
            while queue or pending:
                while queue:
                    cell = queue[0]
                    need = ray_resources(cell)
                    room = sum(_fits(need, n) for n in nodes)
                    if room == 0:
                        queue.popleft()
                        row, samples = failed_row(cell, f"infeasible: the cell asks for "
                                               f"{_describe(need)}; no Ray node has that")
                        yield cell, row, samples
                        continue
                    if len(pending) >= room:
                        break
                    queue.popleft()
                    ref = task.options(**need, max_retries=self.max_retries,
                                       retry_exceptions=False).remote(
                        cell.to_dict(), timeout_s, driver_host)
                    pending[ref] = (cell, time.monotonic() + budget_s)
                if not pending:
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    cell, _deadline = pending.pop(ref)
                    try:
                        row, samples = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        row, samples = failed_row(cell, _lost_reason(exc))
                    yield cell, row, samples
                now = time.monotonic()
                for ref, (cell, deadline) in list(pending.items()):
                    if now > deadline:
                        ray.cancel(ref, force=True)
                        del pending[ref]
                        row, samples = failed_row(cell, f"timeout: no result from its Ray task "
                                               f"within {budget_s:.0f} s; cancelled")
                        yield cell, row, samples
        finally:
            for ref in pending:  # interrupted: free the cluster
                ray.cancel(ref, force=True)
