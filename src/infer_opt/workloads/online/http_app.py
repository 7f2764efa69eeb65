"""The suite's own OpenAI-compatible server (`infer-opt serve VARIANT`).

One scheduler thread runs a registered batching policy (workloads/online/policies/*) over a
live request source: HTTP handlers put requests into it, the policy admits them between decode
steps exactly as it admits seeded arrivals in-process, and every token goes through the one
decode loop (engines/decode.py) of the variant's engine. So `served[server=own]+kv-cache+sdpa`
measures that same stack, plus HTTP.

Endpoints: POST /v1/completions and /v1/chat/completions (streamed as SSE or not), GET
/v1/models, /health, /metrics (Prometheus text), POST /reset_prefix_cache (a no-op: this server
keeps no prefix cache across requests). Like the suite's decode loop, generation never stops at
EOS: every request yields exactly `max_tokens` tokens (so `ignore_eos` is always honoured).
Streaming sends one token per chunk, with `token_ids` and, when `stream_options.
continuous_usage_stats` is set, `usage` on every chunk; `stream_options.include_usage` adds the
final usage chunk. Chat streams start with a role-only chunk, as other servers' do.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime
# (the local `HttpRequest` import must resolve).

import asyncio
import contextlib
import itertools
import json
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from infer_opt.core.timing import HostClock
from infer_opt.workloads.online.detokenize import Detokenizer
from infer_opt.workloads.online.server import Request


class LiveRequest(Request):
    """A request from an HTTP client: each token is handed to the client's event loop."""

    def __init__(self, *args: Any, sink: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink = sink  # (loop, asyncio.Queue) of the handler waiting for tokens

    def add(self, token: int, t: float) -> None:
        if self.done:
            return
        super().add(token, t)
        loop, queue = self.sink
        loop.call_soon_threadsafe(queue.put_nowait, token)
        if self.done:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    def fail(self, reason: str) -> None:
        loop, queue = self.sink
        loop.call_soon_threadsafe(queue.put_nowait, RuntimeError(reason))


class LiveSource:
    """Requests as clients send them (the policies' source interface: due, open, wait)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._queue: list[Request] = []
        self._closed = False

    def submit(self, req: Request) -> None:
        with self._cv:
            self._queue.append(req)
            self._cv.notify_all()

    def due(self, now: float) -> list[Request]:
        with self._cv:
            out, self._queue = self._queue, []
        return out

    @property
    def open(self) -> bool:
        return not self._closed

    def wait(self, clock: HostClock, until_s: float | None = None) -> None:
        # Bounded so a closed source is noticed; an arrival wakes it at once.
        timeout = 0.5 if until_s is None else max(0.0, min(0.5, until_s - clock.now()))
        with self._cv:
            if not self._queue and not self._closed:
                self._cv.wait(timeout)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


@dataclass(frozen=True)
class PolicyOptions:
    """What the policies read from their options (the online workload's fields)."""

    max_batch_size: int = 8
    max_wait_ms: float = 50.0


class Scheduler:
    """The policy's loop on its own thread, for the server's lifetime."""

    def __init__(self, engine: Any, policy: Any, opts: PolicyOptions) -> None:
        self.engine, self.policy, self.opts = engine, policy, opts
        self.source = LiveSource()
        self.clock = HostClock()
        self.live: dict[int, LiveRequest] = {}
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="infer-opt-scheduler",
                                        daemon=True)
        self.step_batch_sizes = 0  # forward steps so far
        self.tokens_total = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.source.close()
        self._thread.join(timeout=10)

    def submit(self, prompt: list[int], max_tokens: int, sink: Any) -> LiveRequest:
        req = LiveRequest(id=next(self._ids), arrival_s=self.clock.now(), prompt=prompt,
                          new_tokens=max_tokens, prompt_len=len(prompt), sink=sink)
        self.live[req.id] = req
        self.source.submit(req)
        return req

    def _loop(self) -> None:
        while self.source.open:
            try:
                with self.engine.context():  # inference mode is per thread: entered here
                    self.policy(self.engine, self.source, self.clock, self.opts, None)
            except Exception as exc:  # fail what was in flight; keep serving
                traceback.print_exc()
                reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                for req in list(self.live.values()):
                    if not req.done:
                        req.fail(reason)
                self.live.clear()


def build_app(engine: Any, tokenizer: Any, policy: Any, opts: PolicyOptions, model_name: str,
              max_context: int) -> Any:
    """The FastAPI application serving `engine` through `policy`."""
    from fastapi import FastAPI
    from fastapi import Request as HttpRequest
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

    scheduler = Scheduler(engine, policy, opts)
    registry = CollectorRegistry()
    m_requests = Counter("infer_opt_requests", "requests received", registry=registry)
    m_failed = Counter("infer_opt_requests_failed", "requests failed", registry=registry)
    m_prompt = Counter("infer_opt_prompt_tokens", "prompt tokens", registry=registry)
    m_gen = Counter("infer_opt_generation_tokens", "generated tokens", registry=registry)
    m_running = Gauge("infer_opt_requests_in_flight", "requests being served",
                      registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(title="infer-opt", lifespan=lifespan)
    app.state.scheduler = scheduler

    def error(status: int, message: str, param: str | None = None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                       "param": param, "code": status}}, status_code=status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model",
                                            "owned_by": "infer-opt",
                                            "max_model_len": max_context}]}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode("utf-8"))

    @app.post("/reset_prefix_cache")
    async def reset_prefix_cache() -> dict[str, str]:
        return {"status": "ok"}  # no prefix cache is kept across requests

    def prompt_ids(body: dict[str, Any], chat: bool) -> list[int] | str:
        """Token ids of the prompt, or the message of a 400."""
        if tokenizer is None and (chat or isinstance(body.get("prompt"), str)):
            return "this model has no tokenizer: send 'prompt' as a list of token ids"
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return "'messages' must be a non-empty list"
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and not isinstance(prompt[0], int):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str) and prompt:
            return [int(i) for i in tokenizer.encode(prompt, add_special_tokens=False)]
        if (isinstance(prompt, list) and prompt
                and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt)):
            return list(prompt)
        return "'prompt' must be a non-empty string or a list of token ids"

    async def complete(http: HttpRequest, chat: bool) -> Any:
        try:
            body = await http.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "body is not JSON")
        if not isinstance(body, dict):
            return error(400, "body must be a JSON object")
        ids = prompt_ids(body, chat)
        if isinstance(ids, str):
            return error(400, ids, "messages" if chat else "prompt")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 16))
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return error(400, f"'max_tokens' must be an integer >= 1, got {max_tokens!r}",
                         "max_tokens")
        if len(ids) + max_tokens > max_context:
            return error(400, f"prompt ({len(ids)}) + max_tokens ({max_tokens}) exceeds the "
                              f"context of {max_context} tokens", "max_tokens")
        if body.get("temperature", 0) not in (0, 0.0, None):
            return error(400, "only greedy decoding (temperature 0) is served", "temperature")
        m_requests.inc()
        m_prompt.inc(len(ids))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        req = scheduler.submit(ids, max_tokens, (loop, queue))
        m_running.inc()
        opts = body.get("stream_options") or {}
        stream_usage = bool(opts.get("include_usage"))
        every_chunk = bool(opts.get("continuous_usage_stats"))
        with_ids = bool(body.get("return_token_ids"))
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{req.id}"
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"

        def usage(n: int) -> dict[str, int]:
            return {"prompt_tokens": len(ids), "completion_tokens": n,
                    "total_tokens": len(ids) + n}

        async def tokens() -> Any:
            """(token, text delta) as the scheduler produces them; raises on a failure."""
            detok = Detokenizer(tokenizer)  # without a tokenizer a token's text is "<id>"
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        return
                    if isinstance(item, Exception):
                        m_failed.inc()
                        raise item
                    delta = detok.add(item)
                    if len(detok.ids) == max_tokens:  # the last token carries what is left
                        delta += detok.flush()
                    m_gen.inc()
                    yield item, delta
            finally:
                m_running.dec()
                scheduler.live.pop(req.id, None)

        def choice(delta: str, tok: list[int], finish: str | None) -> dict[str, Any]:
            c: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                c["delta"] = {"content": delta} if delta or tok else {}
            else:
                c["text"] = delta
            if with_ids and tok:
                c["token_ids"] = tok
            return c

        def event(choices: list[Any], n: int | None = None) -> str:
            obj: dict[str, Any] = {"id": rid, "object": f"{kind}.chunk" if chat else kind,
                                   "created": created, "model": model_name, "choices": choices}
            if n is not None:
                obj["usage"] = usage(n)
            return f"data: {json.dumps(obj)}\n\n"

        if body.get("stream"):
            async def sse() -> Any:
                n = 0
                try:
                    if chat:
                        yield event([{"index": 0, "delta": {"role": "assistant"},
                                      "finish_reason": None, "logprobs": None}])
                    async for tok, delta in tokens():
                        n += 1
                        yield event([choice(delta, [tok], None)], n if every_chunk else None)
                    yield event([choice("", [], "length")], n if every_chunk else None)
                    if stream_usage:
                        yield event([], n)
                    yield "data: [DONE]\n\n"
                except Exception as exc:  # the scheduler failed this request
                    yield f"data: {json.dumps({'error': {'message': str(exc)}})}\n\n"

            return StreamingResponse(sse(), media_type="text/event-stream")
        toks, text = [], ""
        try:
            async for tok, delta in tokens():
                toks.append(tok)
                text += delta
        except Exception as exc:
            return error(500, str(exc))
        c = ({"index": 0, "message": {"role": "assistant", "content": text}} if chat
             else {"index": 0, "text": text})
        c.update(finish_reason="length", logprobs=None)
        if with_ids:
            c["token_ids"] = toks
        return {"id": rid, "object": kind, "created": created, "model": model_name,
                "choices": [c], "usage": usage(len(toks))}

    @app.post("/v1/completions")
    async def completions(http: HttpRequest) -> Any:
        return await complete(http, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(http: HttpRequest) -> Any:
        return await complete(http, chat=True)

    return app
