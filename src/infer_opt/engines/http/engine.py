"""The `served` engine: a stack behind an OpenAI-compatible server, measured over streamed HTTP.

    served[server=own,policy=continuous]+kv-cache+sdpa   the suite's own server (infer-opt serve)
                                                         on kv-cache+sdpa, continuous batching
    served[server=llamacpp]                              llama-cpp-python's server on the GGUF
    served[server=vllm]                                  vLLM's OpenAI server (.venv-vllm)
    served[server=endpoint,endpoint=http://h:p/v1,model_name=M,api_key_env=VAR]
                                                         a server someone else runs

The plugins after `served[...]` run inside the server: they are checked against the engine
there (`hosted_engine`: torch for the own server, llamacpp, vllm), so a served variant is
refused exactly when its in-process twin would be, and its row sits in the same interleaved
rounds as the twin (run/rounds.py). The worker of a served variant starts its server once
(engines/http/launch.py: 127.0.0.1, a free port, ready-checked, logs beside the results,
killed with the worker) and then measures through the streaming client (engines/http/client.py).

The engine contract. There is no step API here (the server decodes); the engine implements the
two request paths workloads use:
- `generate(prompts, new_tokens, clock)` (static batches): B streams at once; token i of the
  batch is stamped when the last of the B streams has its token i, as the decode loop's stamps
  mean. The B requests are separate requests to the server, which may batch them or not
  (the own server's policy decides; a later-admitted request makes TTFT longer and the
  remaining gaps shorter), so bs > 1 compares serving, not one batched forward. Any failed
  stream fails the run (the cell fails with the reason);
- `serve_requests(requests, clock, opts)` (online workloads): each request is sent at its
  arrival time; tokens and stamps fill the Request as the in-process policies do; a failed
  request keeps its reason in `Request.error` and the row counts it (`errors`,
  `error_rate_pct`).
Row columns: the metrics below; the server, its policy and how tokens were counted go to the
row's notes (a string is not a metric).
"""

from __future__ import annotations

import asyncio
import atexit
import os
from typing import Any, ClassVar

import torch

from infer_opt.core.models import ModelRef
from infer_opt.core.params import Param
from infer_opt.core.plugin import Metric
from infer_opt.core.settings import Settings
from infer_opt.core.timing import Clock
from infer_opt.engines.base import BatchRun, Engine, ModelFacts, environment_reason
from infer_opt.engines.http import launch
from infer_opt.engines.http.client import (
    ClientError,
    Completion,
    Job,
    new_client,
    run_jobs,
    sources_note,
)

SERVERS = ("own", "llamacpp", "vllm", "endpoint")
# server -> (engine inside it, its environment, packages it needs there)
HOSTED = {"llamacpp": ("llamacpp", ".venv-llamacpp", ("llama_cpp", "uvicorn", "fastapi")),
          "vllm": ("vllm", ".venv-vllm", ("vllm",))}

METRICS = (
    Metric("errors", "lower", "requests that failed (HTTP status >= 400, timeout, malformed "
                              "SSE, stream ended early, server died), timed runs"),
    Metric("error_rate_pct", "lower", "failed requests / requests sent, %"),
    Metric("short_requests", None, "requests that ended before max_tokens (server ignored "
                                   "ignore_eos / min_tokens): actual lengths were used"),
    Metric("server_start_s", None, "launch to ready of the server process"),
    Metric("prefix_cached_tokens", None, "prompt tokens the server reported answering from its "
                                         "prefix cache (usage.prompt_tokens_details)"),
    Metric("server_prefix_hit_tokens", None, "server /metrics: prefix-cache hits during the "
                                             "timed runs (vLLM prefix_cache_hits)"),
    Metric("server_prefix_query_tokens", None, "server /metrics: prefix-cache queries during "
                                               "the timed runs"),
    Metric("server_preemptions", None, "server /metrics: preemptions during the timed runs"),
    Metric("server_generation_tokens", None, "server /metrics: tokens generated during the "
                                             "timed runs (a cross-check of the client's count)"),
    Metric("server_kv_cache_usage_pct", None, "server /metrics: KV-cache usage after a run, "
                                              "the highest seen, %"),
)

# Server counters (Prometheus sample names) read before and after each run -> row metric.
COUNTERS = {
    "vllm:prefix_cache_hits_total": "server_prefix_hit_tokens",
    "vllm:prefix_cache_queries_total": "server_prefix_query_tokens",
    "vllm:num_preemptions_total": "server_preemptions",
    "vllm:generation_tokens_total": "server_generation_tokens",
    "infer_opt_generation_tokens_total": "server_generation_tokens",
}
GAUGES = {"vllm:kv_cache_usage_perc": ("server_kv_cache_usage_pct", 100.0)}
# Options a suite's header may default for its server=endpoint variants (run/suite.py).
SUITE_OPTIONS = ("endpoint", "model_name", "api_key_env")
# Options that only the own server reads: elsewhere they would name a row for nothing.
OWN_OPTIONS = ("policy", "max_batch_size", "max_wait_ms", "engine")


class ServedEngine(Engine):
    name = "served"
    summary = "a stack behind an OpenAI-compatible server, measured over streamed HTTP"
    requires_packages = ("httpx",)
    dtypes = ()
    kv_caches = ()
    attn_implementations = ()
    honours = frozenset()
    step_api = False
    row_ops = False
    serves_requests: ClassVar[bool] = True
    metrics = METRICS
    options = (
        Param("server", str, "own", "which server", choices=SERVERS),
        Param("policy", str, "continuous", "the own server's batching policy"),
        Param("max_batch_size", int, 8, "the own server's batch limit", minimum=1),
        Param("max_wait_ms", float, 50.0, "the own server's dynamic-batching wait", minimum=0),
        Param("engine", str, "torch", "the engine inside the own server"),
        Param("endpoint", str, "", "base URL ending in /v1 (server=endpoint)"),
        Param("model_name", str, "", "served model name (default: the suite's model)"),
        Param("api_key_env", str, "", "environment variable holding the API key (never "
                                      "written to results or logs)"),
        Param("chat", bool, False, "use /v1/chat/completions (prompts detokenized into one "
                                   "user message) instead of /v1/completions with token ids"),
        Param("timeout_s", float, 600.0, "per request", minimum=1),
        Param("ready_timeout_s", float, 0.0, "server start limit (0: own/llamacpp 180 s, "
                                             "vllm 900 s)", minimum=0),
        Param("stack", str, "", "set by the suite: the rest of the variant, run in the server"),
    )

    @classmethod
    def hosted_engine(cls, settings: Settings) -> str:
        server = settings.options.get("server", "own")
        if server == "own":
            return str(settings.options.get("engine", "torch"))
        return HOSTED[server][0] if server in HOSTED else cls.name

    @classmethod
    def suite_options(cls, settings: Settings, given: dict[str, Any]) -> dict[str, Any]:
        """A suite's endpoint, model name and API key variable are the defaults of its
        server=endpoint variants; a variant's own options win."""
        if settings.options.get("server", "own") != "endpoint":
            return {}
        return {k: v for k, v in given.items() if k in SUITE_OPTIONS and k not in
                settings.options}

    @classmethod
    def check_settings(cls, settings: Settings) -> str | None:
        from infer_opt.core import registry
        from infer_opt.engines.http.endpoint import endpoint_problem, env_name_problem

        o = settings.options
        server = o.get("server", "own")
        if server == "endpoint" and not o.get("endpoint"):
            return ("server=endpoint needs endpoint=http://host:port/v1 (in the variant, or "
                    "the suite's endpoint = \"...\")")
        if server != "endpoint" and o.get("endpoint"):
            return f"endpoint is only for server=endpoint (server is {server})"
        why = o.get("endpoint") and endpoint_problem(str(o["endpoint"]))
        if why:
            return f"endpoint {why}"
        why = o.get("api_key_env") and env_name_problem(str(o["api_key_env"]))
        if why:
            return f"api_key_env {why}"
        policies = registry.names("policy")
        if "policy" in o and o["policy"] not in policies:
            return f"policy must be one of {', '.join(policies)}; got {o['policy']!r}"
        own_only = [k for k in OWN_OPTIONS if k in o]
        if server != "own" and own_only:
            return (f"{own_only[0]} is an option of the own server; server={server} batches "
                    "requests its own way")
        if settings.decoder is not None:
            return ("the own server decodes rows step by step; a plugin replacing whole-"
                    "sequence generation (speculative decoding) is not served")
        if server != "own" and o.get("stack"):
            return (f"plugins run only inside the own server; server={server} serves its "
                    f"engine as it is (got {o['stack']!r})")
        return None

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        from infer_opt.core.plugin import missing_package

        server = settings.options.get("server", "own")
        if server == "own":
            return missing_package(("httpx", "fastapi", "uvicorn", "prometheus_client"))
        if server in HOSTED:
            engine, env, packages = HOSTED[server]
            return missing_package(("httpx",)) or environment_reason(engine, env, packages)
        key_env = settings.options.get("api_key_env")
        if key_env and not os.environ.get(key_env):
            return f"the API key variable {key_env} is not set"
        return missing_package(("httpx",))

    def __init__(self, ref: ModelRef, settings: Settings) -> None:
        self.settings, self.ref = settings, ref
        o = settings.options
        self.server_kind = o.get("server", "own")
        self.model_name = o.get("model_name") or ref.name
        self.chat = bool(o.get("chat", False))
        self.text_prompts = self.server_kind == "llamacpp"
        # Fields a server needs in every request to answer like the suite's decode loop
        # (greedy, fixed length); set by `_launcher` for the server it starts.
        self.extra_body: dict[str, Any] = {}
        self.timeout_s = float(o.get("timeout_s", 600.0))
        key_env = o.get("api_key_env") or ""
        self._api_key = os.environ.get(key_env) if key_env else None  # never in a row or log
        self.server: launch.ServerProcess | None = None
        self.tokenizer: Any = None
        if ref.has_tokenizer:
            from infer_opt.core.models import load_tokenizer

            self.tokenizer = load_tokenizer(ref)
        start_s = 0.0
        if self.server_kind == "endpoint":
            self.base_url = str(o["endpoint"]).rstrip("/")
            settings.notes.append(f"served by the endpoint {self.base_url}")
            from infer_opt.core.stack import SUITE

            header = [k for k in SUITE_OPTIONS if settings.owners.get(f"option {k}") == SUITE]
            if header:
                settings.notes.append(f"{', '.join(header)} from the suite's header")
        else:
            self.server = self._launcher(ref, o)
            atexit.register(self.close)
            ready = float(o.get("ready_timeout_s") or (900 if self.server_kind == "vllm"
                                                       else 180))
            self.server.start(ready)
            self.base_url = self.server.base_url
            start_s = self.server.start_s
            settings.notes.append(f"served by {self._describe(o)} on {self.base_url} (log "
                                  f"{self.server.log_path}); memory columns are the client's, "
                                  "the server's weights are not counted (weight_mb 0)")
        self.load_metrics = {"server_start_s": round(start_s, 3)}
        settings.metrics.update(self.load_metrics)
        self.facts = ModelFacts(weight_bytes=0, kv_bytes_per_token=0, load_s=start_s,
                                extra={"server": self.server_kind})
        self.sources: set[str] = set()
        # One event loop and one connection pool for the engine's lifetime: connections stay
        # open between runs, so no timed request pays a TCP connect the others do not.
        self._loop = asyncio.new_event_loop()
        self._client = new_client(timeout_s=self.timeout_s)

    def _describe(self, o: dict[str, Any]) -> str:
        if self.server_kind == "own":
            return (f"the own server (infer-opt serve {o.get('stack') or 'the engine alone'}, "
                    f"policy {o.get('policy', 'continuous')})")
        return f"{self.server_kind}'s server"

    def _launcher(self, ref: ModelRef, o: dict[str, Any]) -> launch.ServerProcess:
        threads = torch.get_num_threads()
        if self.server_kind == "own":
            inner = [p for p in (o.get("engine", "torch"), o.get("stack", "")) if p]
            stack = "+".join(inner[1:] if inner[0] == "torch" else inner)
            return launch.own_server(stack, ref.name, o.get("policy", "continuous"),
                                     int(o.get("max_batch_size", 8)),
                                     float(o.get("max_wait_ms", 50.0)), threads,
                                     self.settings.device)
        engine, env, _ = HOSTED[self.server_kind]
        from infer_opt.engines.base import environment_python

        python = environment_python(engine, env)
        assert python is not None  # unavailable_reason checked it
        if self.server_kind == "llamacpp":
            from infer_opt.engines.llamacpp import served
            from infer_opt.engines.llamacpp.engine import ensure_gguf

            gguf, _ = ensure_gguf(ref)
            eog = served.eog_token_ids(python, gguf)
            self.extra_body = served.request_fields(eog)
            self.settings.notes.append(served.note(eog))
            return launch.llamacpp_server(python, gguf, self.model_name, threads,
                                          ref.max_context)
        return launch.vllm_server(python, ref.path, self.model_name, threads, 2)

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None and not self._loop.is_closed():
            self._loop.run_until_complete(client.aclose())
            self._loop.close()
        if getattr(self, "server", None) is not None:
            self.server.stop()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit the loop may be gone; the server dies with us
            pass

    # --- requests over HTTP ------------------------------------------------------------
    def _encode(self) -> Any:
        if self.tokenizer is None:
            return None
        return lambda text: self.tokenizer.encode(text, add_special_tokens=False)

    def _prompt(self, ids: list[int]) -> Any:
        """Token ids where the server takes them, else the text they decode to (chat, and
        llama-cpp-python's server, whose completions take strings only: it re-tokenizes, so
        its prompt can differ from the twin's by a token or two)."""
        if self.chat or self.text_prompts:
            if self.tokenizer is None:
                raise RuntimeError(f"{'chat=true' if self.chat else self.server_kind} needs "
                                   "text prompts: a model with a tokenizer")
            return self.tokenizer.decode(ids)
        return ids

    def _send(self, jobs: list[Job], clock: Any = None) -> list[Completion]:
        """Run the jobs on the engine's loop and pool, the server's prefix cache reset first
        and its /metrics read around them; counts go to the row's metrics. `clock` (online
        runs: a HostClock whose zero the jobs' times count from) is restarted after the
        reset, so the reset is not in any request's time."""
        self._check_server("before the run")
        self._reset_prefix_cache(jobs)
        before = self._server_metrics()
        t0 = None
        if clock is not None:
            import time

            clock.start()
            t0 = time.perf_counter() - clock.now()  # the clock's zero, in perf_counter seconds
        out = self._loop.run_until_complete(run_jobs(
            self.base_url, jobs, self.model_name, chat=self.chat, api_key=self._api_key,
            encode=self._encode(), timeout_s=self.timeout_s, t0=t0, client=self._client,
            extra=self.extra_body))
        self._count(out)
        self._check_server("during the run", failed=any(x.error is not None for x in out))
        self._count_server(before, self._server_metrics())
        return out

    def _check_server(self, when: str, failed: bool = False) -> None:
        """A server that died fails the run, naming its exit code and last log lines.
        `failed`: requests failed, perhaps because it died; its connections close a moment
        before its exit can be seen, so it gets up to 1 s to be seen dead."""
        proc = None if self.server is None else self.server.proc
        if failed and proc is not None:
            import subprocess

            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        if self.server is None or self.server.alive:
            return
        code = None if proc is None else proc.returncode
        how = "" if code is None else f" with code {code}" + (
            f" (signal {-code})" if code < 0 else "")
        raise RuntimeError(f"the {self.server_kind} server exited{how} {when}; log "
                           f"{self.server.log_path}: {launch.tail(self.server.log_path)}")

    def _get(self, path: str) -> Any:
        return self._loop.run_until_complete(self._client.get(path, headers=self._headers(),
                                                              timeout=10.0))

    def _headers(self) -> dict[str, str] | None:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else None

    def _root(self) -> str:
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def _reset_prefix_cache(self, jobs: list[Job]) -> None:
        """Repeated prompts must measure prefill, not the server's cache: POST
        /reset_prefix_cache where the server has it (vLLM in dev mode, the own server); else
        (llama.cpp's server reuses the longest common prefix of its slot's last prompt) one
        untimed 1-token request whose prompt shares no first token with the jobs'."""
        if self.server_kind == "endpoint":
            return  # someone else's server: leave its state alone
        try:
            r = self._loop.run_until_complete(self._client.post(
                self._root() + "/reset_prefix_cache", headers=self._headers(), timeout=10.0))
            if r.status_code < 400:
                return
        except ClientError:
            pass
        firsts = {j.prompt[0] for j in jobs if not isinstance(j.prompt, str) and j.prompt}
        flush: Any = next(t for t in range(1, 1 << 20) if t not in firsts)
        # Text servers see BOS first, then this character no prompt of the text starts with.
        flush = "\u2603" if self.text_prompts or self.chat else [flush]
        self._loop.run_until_complete(run_jobs(
            self.base_url, [Job(-1, flush, 1)], self.model_name, chat=self.chat,
            api_key=self._api_key,
            timeout_s=self.timeout_s, client=self._client))

    def _server_metrics(self) -> dict[str, float] | None:
        """The server's Prometheus samples we use, or None where it has no /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            r = self._get(self._root() + "/metrics")
        except ClientError:
            return None
        if r.status_code != 200:
            return None
        out: dict[str, float] = {}
        try:
            for family in text_string_to_metric_families(r.text):
                for sample in family.samples:
                    if sample.name in COUNTERS or sample.name in GAUGES:
                        out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
        except ValueError:
            return None
        return out

    def _count_server(self, before: dict[str, float] | None,
                      after: dict[str, float] | None) -> None:
        if before is None or after is None:
            return
        c, m = self.settings.counters, self.settings.metrics
        for name, column in COUNTERS.items():
            if name in after:
                key = "srv_" + column
                c[key] = c.get(key, 0.0) + after[name] - before.get(name, 0.0)
                m[column] = c[key]
        for name, (column, scale) in GAUGES.items():
            if name in after:
                key = "srv_" + column
                c[key] = max(c.get(key, 0.0), after[name] * scale)
                m[column] = c[key]

    def _count(self, done: list[Completion]) -> None:
        """Counts of the measured requests (Settings.counters, cleared after the warm-up)
        and the metrics derived from them."""
        c = self.settings.counters
        for x in done:
            c["http_requests"] = c.get("http_requests", 0) + 1
            c["http_errors"] = c.get("http_errors", 0) + (x.error is not None)
            c["http_short"] = c.get("http_short", 0) + x.short
            if x.cached_tokens is not None:
                c["http_cached"] = c.get("http_cached", 0) + x.cached_tokens
            if x.error is None:  # how tokens were counted, and how chunks were stamped
                self.sources.update(s for s in (x.token_count_source, x.stamp_source) if s)
        n = c.get("http_requests", 0)
        m = self.settings.metrics
        m.update(errors=c.get("http_errors", 0), short_requests=c.get("http_short", 0),
                 error_rate_pct=100.0 * c.get("http_errors", 0) / n if n else 0.0)
        if "http_cached" in c:
            m["prefix_cached_tokens"] = c["http_cached"]
        note = sources_note(self.sources)
        notes = [x for x in self.settings.notes if not x.startswith("tokens counted from ")]
        self.settings.notes[:] = notes + ([note] if self.sources else [])

    def generate(self, prompts: torch.Tensor, new_tokens: int, clock: Clock) -> BatchRun:
        jobs = [Job(i, self._prompt(row.tolist()), new_tokens) for i, row in enumerate(prompts)]
        done = self._send(jobs)
        failed = [x.error for x in done if x.error is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(done)} requests failed: {failed[0]}")
        n = min(x.tokens for x in done)
        if n < 1:
            raise RuntimeError("the server returned no tokens")
        stamps = [x.stamps_s for x in done]
        # Stamps are seconds since the jobs' clock started, i.e. since the requests were sent.
        batch = [max(s[i] for s in stamps) for i in range(n)]
        ids = [self._ids(x, n) for x in done]
        return BatchRun(stamps_s=batch, tokens=torch.tensor(ids, dtype=torch.long))

    def _ids(self, c: Completion, n: int) -> list[int]:
        """The generated ids: the server's own when it sent them, else the text re-encoded
        (may differ from what it generated), else -1 placeholders."""
        if len(c.token_ids) >= n:
            return c.token_ids[:n]
        enc = self._encode()
        ids = enc(c.text) if enc is not None else []
        return (ids + [-1] * n)[:n]

    def serve_requests(self, requests: Any, clock: Any, opts: Any) -> None:
        """Send each request when it is due on `clock` (restarted here, after the cache
        reset) and fill its stamps, tokens and error. `requests`: a list with arrival times,
        or a live source (multi-turn sessions: a turn is due after the previous answer)."""
        import time

        source = requests  # the workload's request source (workloads/online/server.source_of)
        self._check_server("before the run")
        self._reset_prefix_cache([])
        before = self._server_metrics()
        clock.start()
        t0 = time.perf_counter() - clock.now()  # the clock's zero, in perf_counter seconds
        done = self._loop.run_until_complete(self._drive(source, t0))
        self._count(done)
        self._check_server("during the run", failed=any(x.error is not None for x in done))
        self._count_server(before, self._server_metrics())

    async def _drive(self, source: Any, t0: float) -> list[Completion]:
        """Stream every request as the source hands it out; a finished stream fills its
        request at once (the source may then schedule a session's next turn)."""
        import time

        from infer_opt.engines.http.client import count_tokens, request_body, stream

        def now() -> float:
            return time.perf_counter() - t0

        url = self.base_url + ("/chat/completions" if self.chat else "/completions")
        encode = self._encode()

        async def one(r: Any) -> Completion:
            body = request_body(self._prompt(list(r.prompt)), r.new_tokens, self.model_name,
                                self.chat, self.extra_body)
            c = await stream(self._client, url, body, now, self._headers(), self.timeout_s)
            count_tokens(c, encode)
            r.admitted_s = c.sent_s  # the client cannot see the server's queue
            r.stamps_s = c.stamps_s
            r.tokens = self._ids(c, len(r.stamps_s)) if r.stamps_s else []
            r.error = c.error if c.error is not None else (None if r.stamps_s else "no tokens")
            return c

        out: list[Completion] = []
        pending: set[Any] = set()
        while True:
            for r in source.due(now()):
                pending.add(asyncio.ensure_future(one(r)))
            if not pending and not source.open:
                break
            nxt = source.next_arrival_s()
            timeout = None if nxt is None else max(0.0, nxt - now())
            if pending:
                finished, pending = await asyncio.wait(pending, timeout=timeout,
                                                       return_when=asyncio.FIRST_COMPLETED)
                out += [f.result() for f in finished]
            elif timeout is not None:
                await asyncio.sleep(timeout)
            else:
                break  # nothing in flight, nothing scheduled
        return out

    def score(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a served stack is not scored over HTTP; its in-process "
                                  "twin's fidelity columns apply to the own server")
