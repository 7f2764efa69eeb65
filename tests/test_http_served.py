"""The own server and served variants on the tiny model, on 127.0.0.1 only: served greedy
tokens equal in-process tokens for every policy; failed servers fail their rows with reasons
and the suite goes on; no server process outlives the run, even after kill -9 of it. Every
request loop is bounded in count and time."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from .test_serving import sharp_backend, unbatched  # noqa: E402,F401  (fixture reused)

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def own_server_in_thread(engine: Any, policy: str, max_batch_size: int = 3) -> Iterator[str]:
    """The own server's app on `engine`, served by uvicorn in a thread on a free port."""
    from infer_opt.core import registry
    from infer_opt.workloads.online.http_app import PolicyOptions, build_app

    app = build_app(engine, None, registry.load("policy", policy),
                    PolicyOptions(max_batch_size=max_batch_size, max_wait_ms=20.0),
                    "tiny-random", 512)
    from .http_fixtures import asgi_in_thread

    with asgi_in_thread(app) as url:
        yield url


@pytest.mark.parametrize("policy", ["sequential", "dynamic", "continuous"])
def test_served_greedy_tokens_equal_in_process(sharp_backend, policy: str) -> None:  # noqa: F811
    from infer_opt.engines.http.client import Job, run_jobs

    prompts = [[5, 9, 2, 7, 1, 3, 8], [4, 4, 6], [11, 3, 5, 9, 2], [7, 1]]
    # Staggered so continuous batching admits rows into a running batch.
    jobs = [Job(i, p, 6, at_s=0.01 * i) for i, p in enumerate(prompts)]
    with own_server_in_thread(sharp_backend, policy) as url:
        done = asyncio.run(run_jobs(url, jobs, "tiny-random", timeout_s=60))
    for p, c in zip(prompts, done):
        assert c.error is None, c.error
        assert c.token_count_source == "usage"
        assert c.token_ids == unbatched(sharp_backend, p, 6)


def test_own_server_endpoints_and_bad_requests(sharp_backend) -> None:  # noqa: F811
    import httpx

    with own_server_in_thread(sharp_backend, "continuous") as url:
        root = url[: -len("/v1")]
        assert httpx.get(root + "/health", timeout=10).json() == {"status": "ok"}
        assert httpx.get(url + "/models", timeout=10).json()["data"][0]["id"] == "tiny-random"
        r = httpx.post(url + "/completions", json={"prompt": [1, 2], "max_tokens": 0},
                       timeout=10)
        assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
        r = httpx.post(url + "/completions", json={"prompt": "text", "max_tokens": 2},
                       timeout=10)
        assert r.status_code == 400  # no tokenizer on the tiny model: token ids only
        r = httpx.post(url + "/completions", json={"prompt": [1, 2, 3], "max_tokens": 3},
                       timeout=30)
        body = r.json()
        assert body["usage"]["completion_tokens"] == 3
        metrics = httpx.get(root + "/metrics", timeout=10).text
        assert re.search(r"^infer_opt_generation_tokens_total 3\.0$", metrics, re.M)


@pytest.mark.parametrize("variant, message", [
    ("served[server=endpoint]+kv-cache", "runs on served"),
    ("served[server=endpoint]", "needs endpoint="),
    ("served[server=llamacpp]+kv-cache", "runs on llamacpp"),
    ("served+kv-cache+spec-lookup", "not served"),
    ("served[server=nope]", "one of own, llamacpp, vllm, endpoint"),
])
def test_served_stacks_are_checked_against_the_engine_inside_the_server(variant: str,
                                                                        message: str) -> None:
    from infer_opt.core.errors import UserError
    from infer_opt.core.stack import build_stack

    with pytest.raises(UserError, match=re.escape(message)):
        build_stack(variant, "cpu")
    stack = build_stack("served[policy=dynamic]+kv-cache+sdpa", "cpu")
    assert stack.settings.options["stack"] == "kv-cache+sdpa"
    assert stack.settings.kv_cache == "dynamic" and stack.settings.attn_implementation == "sdpa"


SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 300
[[group]]
variants = ["kv-cache", "served[server=own,policy={policy}]+kv-cache"{more}]
batch_sizes = [2]
prompt_tokens = 8
new_tokens = 5
min_repeats = {repeats}
max_repeats = {repeats}
warmup_runs = 1
"""

ONLINE = """
[[group]]
workload = "online"
variants = ["kv-cache", "served[server=own,policy=continuous]+kv-cache"]
policies = ["continuous"]
num_requests = 4
arrival_rates = [50.0]
prompt_tokens = 6
new_tokens = 4
min_repeats = 2
max_repeats = 2

[[group]]
workload = "trace"
variants = ["kv-cache", "served[server=own,policy=continuous]+kv-cache"]
policies = ["continuous"]
trace = "small"
max_requests = 6
time_scale = 0.05
min_repeats = 2
max_repeats = 2
warmup_requests = 1

[[group]]
workload = "sessions"
variants = ["kv-cache", "served[server=own,policy=continuous]+kv-cache"]
policies = ["continuous"]
arrival_rates = [20.0]
num_sessions = 2
turns = 2
think_time_s = 0.01
prompt_tokens = 6
question_tokens = 3
new_tokens = 3
min_repeats = 2
max_repeats = 2
"""


def run_cli(tmp_path: Path, body: str, env: dict[str, str] | None = None,
            timeout_s: float = 400) -> tuple[dict[tuple[str, str], dict[str, str]], Path]:
    suite = tmp_path / "s.toml"
    suite.write_text(body)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "infer_opt.cli", "run", "--suite", str(suite),
                           "--out", str(out)], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, **(env or {})}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    csv_path = next(out.glob("*.csv"))
    # trace and sessions rows are online rows; their arrival column tells them apart.
    rows = {(r["variant"], r["arrival"].split()[0] if r["arrival"].startswith(("trace",
            "sessions")) else r["workload"]): r for r in csv.DictReader(open(csv_path))}
    return rows, csv_path


def serve_processes() -> dict[int, str]:
    """pid -> command line of every `infer_opt.cli serve` process (from /proc: untruncated)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "infer_opt.cli serve" in cmd:
                out[int(d.name)] = cmd
    return out


def server_pids_alive(log_dir: Path) -> list[int]:
    """Processes still serving on a port named in one of the run's server logs."""
    ports = {p.stem.rsplit("-", 1)[-1] for p in log_dir.glob("*.log")}
    assert ports
    return [pid for pid, cmd in serve_processes().items()
            if any(f"--port {p} " in cmd for p in ports)]


def test_served_rows_beside_in_process_twin(tmp_path: Path) -> None:
    from infer_opt.engines.http import rx_stamps

    body = SUITE.format(policy="continuous", more="", repeats=2) + ONLINE
    rows, csv_path = run_cli(tmp_path, body)
    served = "served[server=own,policy=continuous]+kv-cache"
    for kind in ("static-batch", "online", "trace", "sessions"):
        row = rows[(served, kind)]
        assert row["status"] == "ok", row["reason"]
        assert float(row["errors"]) == 0 and float(row["error_rate_pct"]) == 0
        assert "tokens counted from usage" in row["notes"]
        assert "chunks stamped at kernel receive (SO_TIMESTAMPNS)" in row["notes"] or \
            rx_stamps.SO_TIMESTAMPNS is None
        assert float(row["server_start_s"]) > 0
    samples = {}
    for line in csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines():
        s = json.loads(line)
        samples[(s["variant"], s["workload"].get("kind", "static-batch"))] = s
    for kind in ("static-batch", "online", "trace", "sessions"):
        assert samples[(served, kind)]["tokens"] == samples[("kv-cache", kind)]["tokens"]
    assert rows[(served, "trace")]["arrival"] == "trace small x0.05"
    assert "estimated prefix hits" in rows[(served, "trace")]["notes"]
    assert float(rows[(served, "online")]["server_generation_tokens"]) == 2 * 4 * 4
    assert csv_path.with_name(csv_path.stem + ".served.png").is_file() or not \
        __import__("importlib").util.find_spec("matplotlib")
    log_dir = csv_path.with_name(csv_path.stem + ".servers")
    assert len(list(log_dir.glob("own-*.log"))) == 4  # one server per worker, logs kept
    assert server_pids_alive(log_dir) == []


def test_servers_that_cannot_start_fail_or_skip_their_rows(tmp_path: Path) -> None:
    more = ', "served[server=own,ready_timeout_s=0.001]+kv-cache", "served[server=llamacpp]"'
    body = SUITE.format(policy="sequential", more=more, repeats=1)
    rows, _ = run_cli(tmp_path, body, env={"INFER_OPT_PYTHON_LLAMACPP": "/nonexistent/python"})
    assert rows[("kv-cache", "static-batch")]["status"] == "ok"
    assert rows[("served[server=own,policy=sequential]+kv-cache", "static-batch")][
        "status"] == "ok"
    failed = rows[("served[server=own,ready_timeout_s=0.001]+kv-cache", "static-batch")]
    assert failed["status"] == "failed" and "not ready after" in failed["reason"]
    skipped = rows[("served[server=llamacpp]", "static-batch")]
    assert skipped["status"] == "skipped" and "make setup-llamacpp" in skipped["reason"]


def _wait_for_server(out: Path, timeout_s: float) -> tuple[Path, int]:
    """The first server log of the run under `out` and its port, once the server answers."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = sorted(out.glob("*.servers/own-*.log"))
        if logs:
            port = int(logs[0].stem.rsplit("-", 1)[-1])
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return logs[0], port
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise AssertionError("no served server came up")


def _server_pid(port: int) -> int:
    pids = [pid for pid, cmd in serve_processes().items() if f"--port {port} " in cmd]
    assert len(pids) == 1, pids
    return pids[0]


def _start_run(tmp_path: Path, repeats: int) -> tuple[subprocess.Popen[str], Path]:
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.format(policy="continuous", more="", repeats=repeats)
                     .replace("new_tokens = 5", "new_tokens = 40"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "infer_opt.cli", "run", "--suite",
                             str(suite), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    return proc, out


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_server_killed_mid_run_fails_its_row_and_the_suite_goes_on(tmp_path: Path) -> None:
    proc, out = _start_run(tmp_path, repeats=20)
    try:
        _, port = _wait_for_server(out, 240)
        time.sleep(1.0)  # timed runs under way
        os.killpg(_server_pid(port), signal.SIGKILL)
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    rows = {r["variant"]: r for r in csv.DictReader(open(next(out.glob("*.csv"))))}
    assert rows["kv-cache"]["status"] == "ok"
    row = rows["served[server=own,policy=continuous]+kv-cache"]
    assert row["status"] == "failed"
    assert "server exited with code -9 (signal 9)" in row["reason"]


def test_kill_9_of_the_run_leaves_no_server(tmp_path: Path) -> None:
    proc, out = _start_run(tmp_path, repeats=20)
    try:
        _, port = _wait_for_server(out, 240)
        pid = _server_pid(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _gone(pid, 30), f"server {pid} outlived kill -9 of the run"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("args, field", [
    (["kv-cache", "--policy", "nope"], "--policy"),
    (["kv-cache", "--port", "0"], "--port"),
    (["served+kv-cache"], "variant"),
    (["kv-cache+nope"], "variant"),
])
def test_serve_bad_input_is_one_line_and_exit_2(args: list[str], field: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "infer_opt.cli", "serve", *args, "--model",
                           "tiny-random"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in proc.stderr


def test_serve_on_a_taken_port_is_one_line_before_the_model_loads() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "infer_opt.cli", "serve", "kv-cache",
                               "--model", "tiny-random", "--port", str(port)],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--port" in lines[0] and str(port) in lines[0], proc.stderr
