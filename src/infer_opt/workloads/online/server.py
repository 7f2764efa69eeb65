"""What a serving policy works with: requests, their timestamps, and the wall clock.

Time is real: request i is due `arrival_s` seconds after the run starts, the server sleeps
until a request is due when it has nothing else to do, and every stamp is `perf_counter` read
after the step's tokens are on the host (the `.tolist()` of the greedy ids waits for the
device, so CUDA work is finished when a stamp is taken).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infer_opt.core.timing import HostClock
from infer_opt.engines import decode


@dataclass
class Request:
    """One request and what happened to it. Times are seconds since the run started."""

    id: int
    arrival_s: float
    prompt: list[int]  # the tokens to prefill (after the shared prefix, when one is reused)
    new_tokens: int
    prompt_len: int = 0  # full prompt length, shared prefix included
    admitted_s: float | None = None  # prefill started (queue wait ends)
    stamps_s: list[float] = field(default_factory=list)  # when each output token was ready
    tokens: list[int] = field(default_factory=list)
    # Why the request failed (an engine serving over HTTP: status, timeout, server died);
    # None when it completed. A failed request is counted in the row, not timed.
    error: str | None = None

    @property
    def done(self) -> bool:
        return len(self.tokens) >= self.new_tokens

    def add(self, token: int, t: float) -> None:
        if not self.done:
            self.tokens.append(token)
            self.stamps_s.append(t)


class Arrivals:
    """Requests in arrival order, their times known up front; hands out those that are due.

    A policy reads requests from a source with this interface (`due`, `open`, `wait`): this
    seeded list, closed-loop clients (closed_loop.py) and multi-turn sessions (sessions.py),
    whose requests become due as earlier ones end, or the live queue of the suite's HTTP server
    (workloads/online/http_app.py), whose requests arrive when clients send them.
    """

    def __init__(self, requests: list[Request]) -> None:
        self.pending = sorted(requests, key=lambda r: (r.arrival_s, r.id))
        self._next = 0

    def due(self, now: float) -> list[Request]:
        out = []
        while self._next < len(self.pending) and self.pending[self._next].arrival_s <= now:
            out.append(self.pending[self._next])
            self._next += 1
        return out

    def next_arrival_s(self) -> float | None:
        if self._next < len(self.pending):
            return self.pending[self._next].arrival_s
        return None

    @property
    def open(self) -> bool:
        """More requests will come."""
        return self._next < len(self.pending)

    def wait(self, clock: HostClock, until_s: float | None = None) -> None:
        """Sleep until the next arrival, or until `until_s` when that is sooner."""
        nxt = self.next_arrival_s()
        t = until_s if nxt is None else (nxt if until_s is None else min(nxt, until_s))
        if t is not None:
            clock.sleep_until(t)


def source_of(requests: Any) -> Any:
    """A policy's request source: a list of requests becomes `Arrivals`; a live source (with
    `due`, `open`, `wait`) is used as it is."""
    return requests if hasattr(requests, "due") else Arrivals(requests)


@dataclass
class ServerCounters:
    """What the server loop saw: the batch size of every forward step."""

    step_batch_sizes: list[int] = field(default_factory=list)


Policy = Any  # a callable (engine, requests, clock, options, prefix) -> ServerCounters


def prefill_stamped(engine: Any, batch: list[Request], clock: HostClock, prefix: Any,
                    stats: ServerCounters) -> Any:
    """Admit `batch`: prefill it as one padded batch, stamp each first token.

    Returns the running rows without those already finished (new_tokens == 1), or None when
    none is left.
    """
    now = clock.now()
    for r in batch:
        r.admitted_s = now
    start = 0 if prefix is None else prefix.length
    capacity = start + max(len(r.prompt) for r in batch) + max(r.new_tokens for r in batch)
    run, first = decode.prefill(engine, [r.prompt for r in batch], [r.id for r in batch],
                                capacity, prefix)
    tokens = first.tolist()  # waits for the device: the tokens are ready
    t = clock.now()
    stats.step_batch_sizes.append(len(batch))
    for r, tok in zip(batch, tokens):
        r.add(tok, t)
    return decode.select(engine, run, [i for i, r in enumerate(batch) if not r.done])


def decode_stamped(engine: Any, run: Any, by_id: dict[int, Request], clock: HostClock,
                   stats: ServerCounters) -> Any:
    """One decode step for every row; finished rows leave. Returns the rows or None."""
    tokens = decode.decode(engine, run).tolist()  # waits for the device
    t = clock.now()
    stats.step_batch_sizes.append(run.size)
    keep = []
    for i, (rid, tok) in enumerate(zip(run.ids, tokens)):
        r = by_id[rid]
        r.add(tok, t)
        if not r.done:
            keep.append(i)
    return decode.select(engine, run, keep)
