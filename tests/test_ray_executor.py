"""The Ray executor: same rows as the local executor, failures as rows, one clear line without
Ray. Tests that need Ray start one local Ray for the module (≈ 3-30 s here, depending on load)
and are skipped with a reason when the `cluster` extra is not installed."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
from pathlib import Path

import pytest

from infer_opt import cli
from infer_opt.core.errors import UserError
from infer_opt.core.models import resolve
from infer_opt.format.columns import COST, LATENCY, SAMPLING, TELEMETRY, THROUGHPUT
from infer_opt.run import ray_executor as rx
from infer_opt.run.cell import Cell
from infer_opt.run.executors import make_executor
from infer_opt.run.plan import plan_cells
from infer_opt.run.rounds import Job
from infer_opt.run.runner import local_executor, run_suite
from infer_opt.run.suite import load_suite

from .conftest import write_suite

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray not installed (pip install "
                               "'infer-opt[cluster]'); the Ray executor is optional")

SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 60
[[group]]
variants = ["baseline", "kv-cache+sdpa", "sdpa-flash", "test-raise", "test-crash"]
batch_sizes = [2]
prompt_tokens = 12
new_tokens = 6
min_repeats = 2
max_repeats = 2
warmup_runs = 1
"""

# Measured, so allowed to differ between two runs of the same cell; everything else must match.
MEASURED = set(LATENCY + THROUGHPUT + COST + SAMPLING + TELEMETRY) - {"timed_runs"} | {
    "run_id", "host", "timestamp_utc", "rss_before_load_mb", "peak_rss_mb", "peak_device_mem_mb",
    "achieved_gb_per_s", "bandwidth_gb_per_s", "roofline_pct"}


def _is_measured(column: str) -> bool:
    return column in MEASURED or column.endswith(("_ms", "_per_s", "_s"))


def _read(csv_path: Path) -> tuple[list[dict[str, str]], dict[int, dict]]:
    with open(csv_path, newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["cell_index"]))
    samples_path = csv_path.with_name(csv_path.stem + ".samples.jsonl")
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
    return rows, {s["cell_index"]: s for s in samples}


# --- without a cluster -------------------------------------------------------------------

def test_resources_per_job() -> None:
    cell = Cell(run_id="r", suite="s", index=0, model={"name": "m"}, variant="baseline",
                workload={}, device="cpu", threads=3, bandwidth_gb_per_s=1.0)
    cpu = Job([cell], 60.0)
    gpu = Job([Cell(**{**cell.to_dict(), "device": "cuda"})], 60.0)
    assert rx.ray_resources(cpu) == {"num_cpus": 3}
    assert rx.ray_resources(gpu) == {"num_gpus": 1, "num_cpus": 1}
    node = {"CPU": 16.0, "GPU": 2.0}
    assert rx._fits(rx.ray_resources(cpu), node) == 5
    assert rx._fits(rx.ray_resources(gpu), node) == 2
    assert rx._fits(rx.ray_resources(gpu), {"CPU": 16.0}) == 0


def test_workers_get_the_gpu_ray_gave_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray worker is reused by tasks given different GPUs; the forkserver keeps the
    environment of the first: each job hands its task's CUDA_VISIBLE_DEVICES to its workers."""
    seen: dict[str, object] = {}
    monkeypatch.setattr(rx, "run_job", lambda job: seen.update(env=job.env) or [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    cell = Cell(run_id="r", suite="s", index=0, model={"name": "m"}, variant="baseline",
                workload={}, device="cpu", threads=1, bandwidth_gb_per_s=1.0)
    rx.run_job_task(Job([cell], 60.0).to_dict(), socket.gethostname())
    assert seen["env"] == {"CUDA_VISIBLE_DEVICES": "3"}


def test_missing_ray_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(rx.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    suite = write_suite(tmp_path / "s.toml", SUITE)
    code = cli.main(["run", "--suite", str(suite), "--out", str(tmp_path / "r"),
                     "--executor", "ray"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2
    assert err == ["infer-opt: error: executor: 'ray' needs the Ray package, not installed here: "
                   "pip install 'infer-opt[cluster]' (or make setup with 'cluster' in EXTRAS)"]
    assert not (tmp_path / "r").exists()


def test_address_needs_ray_executor() -> None:
    with pytest.raises(UserError, match="address: only used with --executor ray"):
        make_executor("local", address="head:6379")


@needs_ray
@pytest.mark.parametrize("address,needle", [
    ("127.0.0.1:1", "address: no Ray cluster reachable at 127.0.0.1:1"),
    ("headnode", "address: expected HOST:PORT or ray://HOST:PORT, got 'headnode'"),
])
def test_bad_address_is_one_line(address: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle.replace(".", r"\.")):
        make_executor("ray", address=address)


# --- on a local Ray ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module; the executors below find it running and leave it up."""
    if not HAVE_RAY:
        pytest.skip("ray not installed")
    with rx.RayExecutor(num_cpus=2).session() as ray:
        tmp = os.environ["RAY_TMPDIR"]
        yield ray, tmp
    assert not Path(tmp).exists(), "Ray's temp dir must go with the run"


@needs_ray
def test_ray_files_stay_in_the_runs_temp_dir(local_ray) -> None:
    ray, tmp = local_ray
    assert ray.is_initialized()
    assert any(p.name.startswith("session_") for p in Path(tmp).iterdir())


@needs_ray
def test_same_rows_under_both_executors(local_ray, tmp_path: Path) -> None:
    suite = load_suite(str(write_suite(tmp_path / "s.toml", SUITE)))
    local_rows, local_samples = _read(run_suite(suite, tmp_path / "local", log=lambda _m: None,
                                                executor=local_executor))
    ray_rows, ray_samples = _read(run_suite(suite, tmp_path / "ray", log=lambda _m: None,
                                            executor=rx.RayExecutor()))
    assert [r["status"] for r in ray_rows] == ["ok", "ok", "skipped", "failed", "failed"]
    assert ray_rows[4]["reason"] == "crashed: exit code 3 before answering"
    compared = [c for c in ray_rows[0] if not _is_measured(c)]
    assert {"variant", "status", "reason", "weight_mb", "dtype", "bytes_per_decode_step_mb",
            "torch_version", "git_commit"} <= set(compared)
    for lr, rr in zip(local_rows, ray_rows, strict=True):
        assert {c: lr[c] for c in compared} == {c: rr[c] for c in compared}, lr["variant"]
    for i, s in ray_samples.items():
        assert s.get("tokens") == local_samples[i].get("tokens"), ray_rows[i]["variant"]
    assert ray_samples[0]["tokens"] and len(ray_samples[0]["tokens"][0]) == 6
    # `host` comes from the process that ran the cell (here: a Ray worker on this machine).
    assert ray_rows[0]["host"] == socket.gethostname()


@needs_ray
def test_lost_or_impossible_tasks_become_failed_rows(local_ray, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    body = SUITE.replace('"baseline", "kv-cache+sdpa", "sdpa-flash", "test-raise", "test-crash"',
                        '"test-hang"')
    [hang] = plan_cells(load_suite(str(write_suite(tmp_path / "s.toml", body))), "r",
                        resolve("tiny-random"), "cpu", 1.0)
    too_big = Cell(**{**hang.to_dict(), "index": 1, "variant": "baseline", "threads": 64})
    # Driver-side deadline 3 s after submission (a budget of 60 s x 1 request, grace -57 s): the
    # task is cancelled with force, as a hung or unreachable node would be.
    monkeypatch.setattr(rx, "GRACE_S", -57.0)
    monkeypatch.setattr(rx, "REQUESTS_PER_CELL", 1)
    out = {cell.variant: row for cell, row, _s in rx.RayExecutor()([Job([too_big], 60.0),
                                                                    Job([hang], 60.0)])}
    assert out["baseline"]["status"] == "failed"
    assert out["baseline"]["reason"] == "infeasible: the job asks for 64 CPU; no Ray node has that"
    assert out["test-hang"]["status"] == "failed"
    assert out["test-hang"]["reason"] == ("timeout: no result from its Ray task in its budget; "
                                          "cancelled")


def test_lost_reason_is_one_line() -> None:
    class WorkerCrashedError(Exception):
        pass

    reason = rx._lost_reason(WorkerCrashedError("The worker died unexpectedly.\nmore"))
    assert reason == "ray task lost: WorkerCrashedError: The worker died unexpectedly."


@pytest.mark.skipif(not os.sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_cell_process_dies_with_its_parent(tmp_path: Path) -> None:
    """A killed run or a cancelled Ray task (its worker killed): the forkserver exits and the
    cell must follow rather than keep a core busy."""
    import signal
    import subprocess
    import sys
    import time

    script = ("import os, sys, time\n"
              "from infer_opt.run.worker import die_with_parent\n"
              "pid = os.fork()\n"
              "if pid == 0:\n"
              "    die_with_parent(); time.sleep(120); os._exit(0)\n"
              "print(pid, flush=True); time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(0.5)  # let the child reach prctl
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    status = Path(f"/proc/{child}/status")
    for _ in range(50):
        try:
            state = next(ln for ln in status.read_text().splitlines() if ln.startswith("State"))
        except FileNotFoundError:
            return
        if "zombie" in state:  # dead, waiting for a reaper that this container may lack
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the cell process outlived its parent")
