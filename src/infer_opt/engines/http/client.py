"""A streaming client for OpenAI-compatible `/v1/completions` and `/v1/chat/completions`.

One `Pool` (one connection pool, httpcore's) sends every request of a run, and the control
requests of the served engine (`get`, `post`: /metrics, /reset_prefix_cache) go through the
same pool, so one object owns every connection to the server.

Stamps: when the bytes arrived, not when Python got to them. Each token-bearing chunk is
stamped on the run's clock (`HostClock`, perf_counter seconds since the run started: the same
clock the in-process serving policies stamp tokens with) with the time the kernel received
the bytes that completed its SSE line (engines/http/rx_stamps.py: `SO_TIMESTAMPNS` on Linux).
httpcore reads the socket only when its parser needs bytes, so every line completed in a body
chunk arrived in the latest read, and takes that read's stamp. Stamping at processing time
instead put the client's own queueing into the measurement: with 32 streams the chunks that
arrive together are parsed one after another, and the last was stamped milliseconds late
(bench/checks/client_timing.py). Where the kernel gives no stamp (not Linux; https, which uses
httpcore's own network backend) a chunk is stamped when the client read it. A Completion's
`stamp_source` says which: "kernel" when every chunk had the kernel's stamp, else "read"; the
served row's notes say it too (`sources_note`).

Tokens, not chunks. A chunk is a token-bearing event only when it carries text (completions:
`choices[0].text`, chat: `choices[0].delta.content`) or token ids; a role-only first chunk
(`delta: {"role": "assistant"}`), an empty chunk and the final `finish_reason` / usage chunks
carry no tokens and get no stamp (vLLM issues 15106 and 27485 counted them). How many tokens a
chunk carries, in order of preference (the row's `token_count_source` says which was used):
  "usage"      the server's per-chunk `usage.completion_tokens` (vLLM with
               `stream_options.continuous_usage_stats`): the delta from the previous chunk;
  "token_ids"  token ids in the chunk (`choices[0].token_ids`, sent by the suite's own server
               and by vLLM when `return_token_ids` is set);
  "tokenizer"  the model's tokenizer on the text so far: chunk i carries
               len(encode(text[:i])) - len(encode(text[:i-1])) (never negative); when the
               final `usage` gives a different total, the last chunk absorbs the difference;
  "chunks"     no usage and no tokenizer: one token per text chunk (marked in the row).
A completion's total is the final `usage.completion_tokens` when the server sends one
(`stream_options.include_usage`), else the sum above.

ITL for a chunk with k tokens: the k tokens share the chunk's arrival stamp, so a request with
n tokens always has n stamps and n - 1 inter-token latencies, k - 1 of them 0 ms inside such a
chunk, and the gap before the chunk falls on its first token. Then mean ITL = TPOT =
(last stamp - first stamp) / (n - 1), whatever the chunking, and TTFT is the first
token-bearing chunk.

Fixed output length: the client sends `ignore_eos` and `min_tokens` = `max_tokens`; a server
that ignores them may stop early, so the actual length is recorded (`tokens`) and
`short = True` marks it.

Errors are results, never exceptions: an HTTP status >= 400, a timeout, a connection failure,
a line that is not valid SSE JSON, an `error` event, and a stream that ends without `[DONE]`
or a finish reason set `error` (a one-line reason). The caller counts them per row; a failed
request is never dropped silently from the latency statistics. The pool's `get` and `post`
raise `ClientError` when no HTTP answer came.
"""


from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

TOKEN_COUNT_SOURCES = ("usage", "token_ids", "tokenizer", "chunks")
STAMP_SOURCES = {"kernel": "chunks stamped at kernel receive (SO_TIMESTAMPNS)",
                 "read": "chunks stamped at read"}


@dataclass
class Completion:
    """One streamed request: what arrived when. Times are seconds on the run's clock."""

    sent_s: float
    chunk_s: list[float] = field(default_factory=list)  # arrival of each token-bearing chunk
    chunk_tokens: list[int] = field(default_factory=list)  # tokens in that chunk (after count)
    chunk_text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # when the server sends them
    usage: dict[str, Any] | None = None  # the last usage object seen
    usage_per_chunk: list[int | None] = field(default_factory=list)  # completion_tokens so far
    finish_reason: str | None = None
    token_count_source: str = ""
    kernel_stamps: int = 0  # chunks whose stamp is the kernel's receive time (else the read's)
    error: str | None = None
    requested_tokens: int = 0
    done_s: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.chunk_text)

    @property
    def tokens(self) -> int:
        return sum(self.chunk_tokens)

    @property
    def short(self) -> bool:
        """Fewer tokens than asked for: the server stopped early (EOS, no ignore_eos)."""
        return self.error is None and self.tokens < self.requested_tokens

    @property
    def stamps_s(self) -> list[float]:
        """One stamp per token: a chunk of k tokens gives its arrival time k times."""
        return [t for t, k in zip(self.chunk_s, self.chunk_tokens) for _ in range(k)]

    @property
    def stamp_source(self) -> str:
        """"kernel" when every chunk has the kernel's receive stamp, "read" when any was
        stamped at read, "" with no token-bearing chunk."""
        if not self.chunk_s:
            return ""
        return "kernel" if self.kernel_stamps == len(self.chunk_s) else "read"

    @property
    def cached_tokens(self) -> int | None:
        """Prompt tokens the server answered from its prefix cache, when usage says so."""
        details = (self.usage or {}).get("prompt_tokens_details") or {}
        value = details.get("cached_tokens")
        return int(value) if isinstance(value, int) else None


def sources_note(sources: set[str]) -> str:
    """The served row's note on how its requests' tokens were counted and their chunks
    stamped, from the `token_count_source` and `stamp_source` values of its completions:
    "tokens counted from usage; chunks stamped at kernel receive (SO_TIMESTAMPNS)"."""
    counted = "/".join(sorted(s for s in sources if s in TOKEN_COUNT_SOURCES))
    stamped = [STAMP_SOURCES[s] for s in ("kernel", "read") if s in sources]
    if len(stamped) == 2:
        stamped = [STAMP_SOURCES["kernel"] + ", some at read"]
    return "; ".join([f"tokens counted from {counted}"] + stamped)


class ClientError(Exception):
    """A control request (`Pool.get` / `Pool.post`) got no HTTP answer: connect, read or write
    failure, timeout, protocol error."""


@dataclass
class Reply:
    """A whole, non-streamed answer to a control request."""

    status_code: int
    text: str


def transport_errors() -> tuple[type[Exception], ...]:
    """What httpcore raises when a request gets no (complete) HTTP answer."""
    import httpcore

    return (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
            httpcore.UnsupportedProtocol, httpcore.ProxyError)


class Pool:
    """The one connection pool of a run or of an engine's lifetime: streamed requests
    (`stream`), control requests (`get`, `post`), `aclose`.

    Plain http goes through httpcore with the kernel-stamping network backend
    (engines/http/rx_stamps.py); https through httpcore's own backend (TLS on raw sockets is
    not worth it for the benchmark path), created on first use, stamped at read."""

    def __init__(self, max_connections: int = 256, timeout_s: float = 600.0) -> None:
        import httpcore

        from infer_opt.engines.http import rx_stamps

        self.timeout_s = timeout_s
        self._limits = {"max_connections": max_connections,
                        "max_keepalive_connections": max_connections}
        backend = rx_stamps.StampingBackend() if rx_stamps.supported() else None
        self._plain = httpcore.AsyncConnectionPool(network_backend=backend, **self._limits)
        self._tls: Any = None

    def _for(self, url: str) -> Any:
        if url[:6].lower() != "https:":
            return self._plain
        if self._tls is None:
            import httpcore

            self._tls = httpcore.AsyncConnectionPool(**self._limits)
        return self._tls

    @staticmethod
    def _timeouts(timeout_s: float) -> dict[str, Any]:
        t = timeout_s
        return {"timeout": {"connect": t, "read": t, "write": t, "pool": t}}

    def stream(self, method: str, url: str, content: bytes, headers: dict[str, str],
               timeout_s: float | None = None) -> AbstractAsyncContextManager[Any]:
        """httpcore's streamed response (`.status`, `.aiter_stream()`, `.aread()`,
        `.extensions["network_stream"]`) as an async context manager."""
        return self._for(url).stream(method, url, headers=headers, content=content,
                                     extensions=self._timeouts(timeout_s or self.timeout_s))

    async def _request(self, method: str, url: str, headers: dict[str, str] | None,
                       content: bytes, timeout: float | None) -> Reply:
        try:
            r = await self._for(url).request(method, url, headers=headers or {},
                                             content=content,
                                             extensions=self._timeouts(timeout or self.timeout_s))
        except transport_errors() as exc:
            raise ClientError(_one_line(exc)) from exc
        return Reply(r.status, r.content.decode("utf-8", "replace"))

    async def get(self, url: str, headers: dict[str, str] | None = None,
                  timeout: float | None = None) -> Reply:
        return await self._request("GET", url, headers, b"", timeout)

    async def post(self, url: str, headers: dict[str, str] | None = None,
                   timeout: float | None = None, content: bytes = b"") -> Reply:
        return await self._request("POST", url, headers, content, timeout)

    async def aclose(self) -> None:
        await self._plain.aclose()
        if self._tls is not None:
            await self._tls.aclose()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def request_body(prompt: str | Sequence[int], max_tokens: int, model: str, chat: bool,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body: greedy, streamed, usage asked for, a fixed output length asked for."""
    body: dict[str, Any] = {
        "model": model, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "ignore_eos": True, "min_tokens": max_tokens, "return_token_ids": True,
    }
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = list(prompt) if not isinstance(prompt, str) else prompt
    body.update(extra or {})
    return body


def _chunk_text(choice: dict[str, Any]) -> str:
    if "delta" in choice:  # chat
        return (choice.get("delta") or {}).get("content") or ""
    return choice.get("text") or ""


async def stream(client: Pool, url: str, body: dict[str, Any], now: Callable[[], float],
                 headers: dict[str, str] | None = None, timeout_s: float = 600.0) -> Completion:
    """POST `body` to `url` and read its SSE stream into a Completion. `now()` is the run's
    clock: perf_counter minus a fixed zero (chunk stamps, taken in perf_counter seconds, are
    moved onto it)."""
    c = Completion(sent_s=now(), requested_tokens=int(body.get("max_tokens", 0)))
    try:
        saw_done = await asyncio.wait_for(_read(client, url, body, headers, now, c, timeout_s),
                                          timeout_s)
    except asyncio.TimeoutError:  # the whole request (httpcore's ReadTimeout is per read)
        c.error = f"timeout after {timeout_s:g} s"
        return c
    except transport_errors() as exc:
        c.error = _one_line(exc)
        return c
    if c.error is not None:
        return c
    c.done_s = now()
    if not saw_done and c.finish_reason is None:
        c.error = "stream ended early (no [DONE], no finish_reason)"
    return c


async def _read(client: Pool, url: str, body: dict[str, Any], headers: dict[str, str] | None,
                now: Callable[[], float], c: Completion, timeout_s: float) -> bool:
    """Read the stream into `c`; True when `[DONE]` arrived. Sets c.error and stops on a
    status >= 400 or a malformed line."""
    from infer_opt.engines.http.rx_stamps import StampedStream

    before = time.perf_counter()
    zero = (before + time.perf_counter()) / 2 - now()  # perf_counter at the run clock's 0
    head = {"Content-Type": "application/json", "Accept": "text/event-stream", **(headers or {})}
    async with client.stream("POST", url, json.dumps(body).encode(), head, timeout_s) as resp:
        if resp.status >= 400:
            text = (await resp.aread()).decode("utf-8", "replace")
            c.error = f"HTTP {resp.status}: {' '.join(text.split())[:200]}"
            return False
        net = resp.extensions.get("network_stream")
        stamped = isinstance(net, StampedStream)  # else (https, no backend): at processing
        tail, t, kernel = b"", 0.0, False
        async for chunk in resp.aiter_stream():
            # The lines this chunk completes arrived in the stream's latest read.
            if stamped:
                t, kernel = net.stamp_s - zero, net.kernel
            else:
                t = now()
            if b"\n" not in chunk:
                tail += chunk
                continue
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()  # the start of a line the next chunk completes
            for line in lines:
                if line and line != b"\r":  # a blank line ends an event: nothing to read
                    done = _line(c, line, t, kernel)
                    if done is not None:
                        return done
        if tail.strip():  # a last line without its newline
            done = _line(c, tail, t, kernel)
            if done is not None:
                return done
    return False


def _line(c: Completion, line: bytes, t: float, kernel: bool) -> bool | None:
    """One SSE line: True at `[DONE]`, False on a malformed line or an error event (c.error
    set), None to go on."""
    if line[-1:] == b"\r":
        line = line[:-1]
    if not line or line[:1] == b":":  # keep-alive / comment lines
        return None
    if line[:5] != b"data:":
        if line.startswith((b"event:", b"id:", b"retry:")):
            return None
        c.error = f"malformed SSE line: {line[:80].decode('utf-8', 'replace')!r}"
        return False
    data = line[5:].strip()
    if data == b"[DONE]":
        return True
    try:
        event = json.loads(data)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        c.error = f"malformed SSE JSON: {data[:80].decode('utf-8', 'replace')!r}"
        return False
    if not isinstance(event, dict):
        c.error = f"malformed SSE event: {data[:80].decode('utf-8', 'replace')!r}"
        return False
    if "error" in event:
        c.error = f"server error: {str(event['error'])[:200]}"
        return False
    _take(c, event, t, kernel)
    return None


def _take(c: Completion, event: dict[str, Any], t: float, kernel: bool) -> None:
    usage = event.get("usage")
    if isinstance(usage, dict):
        c.usage = usage
    choices = event.get("choices") or []
    if not choices:
        return  # the final usage-only chunk
    choice = choices[0]
    if choice.get("finish_reason"):
        c.finish_reason = choice["finish_reason"]
    text = _chunk_text(choice)
    ids = choice.get("token_ids") or []
    if not text and not ids:
        return  # role-only, empty or finish-only chunk: no tokens, no stamp
    c.chunk_s.append(t)
    c.kernel_stamps += kernel
    c.chunk_text.append(text)
    c.token_ids.extend(int(i) for i in ids)
    c.chunk_tokens.append(len(ids))
    done = usage.get("completion_tokens") if isinstance(usage, dict) else None
    c.usage_per_chunk.append(int(done) if isinstance(done, int) else None)


def count_tokens(c: Completion, encode: Callable[[str], list[int]] | None) -> None:
    """Fill `chunk_tokens` and `token_count_source` (module docstring, in that order)."""
    n = len(c.chunk_s)
    if n == 0:
        c.token_count_source = "usage" if c.usage else ("tokenizer" if encode else "chunks")
        return
    per_chunk = c.usage_per_chunk
    if all(u is not None for u in per_chunk):
        counts, prev = [], 0
        for u in per_chunk:
            assert u is not None
            counts.append(max(u - prev, 0))
            prev = max(prev, u)
        c.chunk_tokens, c.token_count_source = counts, "usage"
        return
    if c.token_ids and len(c.token_ids) == sum(c.chunk_tokens) and all(c.chunk_tokens):
        c.token_count_source = "token_ids"
        counts = list(c.chunk_tokens)
    elif encode is not None:
        counts, prev, text = [], 0, ""
        for piece in c.chunk_text:
            text += piece
            total = max(len(encode(text)), prev)
            counts.append(total - prev)
            prev = total
        c.token_count_source = "tokenizer"
    else:
        counts = [1] * n
        c.token_count_source = "chunks"
    final = (c.usage or {}).get("completion_tokens")
    if isinstance(final, int) and final != sum(counts) and c.token_count_source != "token_ids":
        counts[-1] = max(counts[-1] + final - sum(counts), 0)
    c.chunk_tokens = counts


@dataclass
class Job:
    """One request of a run: sent `at_s` after the run starts (None: as soon as a slot frees,
    in fixed-concurrency mode)."""

    id: int
    prompt: str | Sequence[int]
    max_tokens: int
    at_s: float = 0.0


def new_client(max_connections: int = 256, timeout_s: float = 600.0) -> Pool:
    """One connection pool for every request of a run (or of an engine's lifetime)."""
    return Pool(max_connections, timeout_s)


async def run_jobs(base_url: str, jobs: list[Job], model: str, *, chat: bool = False,
                   concurrency: int | None = None, api_key: str | None = None,
                   encode: Callable[[str], list[int]] | None = None,
                   timeout_s: float = 600.0, extra: dict[str, Any] | None = None,
                   t0: float | None = None, client: Pool | None = None) -> list[Completion]:
    """Send every job at its time (or `concurrency` at a time) over one connection pool
    (`client`, kept open by the caller; a new one, closed at the end, when None).

    Returns one Completion per job, in job order; the clock starts at `t0` (perf_counter;
    now by default) and every stamp is seconds since then."""
    start = time.perf_counter() if t0 is None else t0

    def now() -> float:
        return time.perf_counter() - start

    url = base_url.rstrip("/") + ("/chat/completions" if chat else "/completions")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    gate = asyncio.Semaphore(concurrency or len(jobs) or 1)

    async def one(pool: Pool, job: Job) -> Completion:
        if concurrency is None:
            delay = job.at_s - now()
            if delay > 0:
                await asyncio.sleep(delay)
        async with gate:
            body = request_body(job.prompt, job.max_tokens, model, chat, extra)
            c = await stream(pool, url, body, now, headers, timeout_s)
        count_tokens(c, encode)
        return c

    if client is not None:
        return list(await asyncio.gather(*(one(client, j) for j in jobs)))
    async with new_client(max(concurrency or len(jobs), 1), timeout_s) as pool:
        return list(await asyncio.gather(*(one(pool, j) for j in jobs)))
