"""Fixed concurrency (`arrival = "concurrency"`): N closed-loop clients.

Each of N clients sends a request, waits for its last token, and sends the next at once, so
at most N requests are in flight and a slower server slows the load down (GuideLLM's
"concurrent" profile, vLLM bench's --max-concurrency, AIPerf's concurrency). The run serves
`num_requests` in total; the first N arrive at t = 0.

`ClosedLoop` is a live request source with the policies' interface (`due`, `open`, `wait`,
`next_arrival_s`; workloads/online/server.py), so the in-process policies and the served
engine's request loop (engines/http) drive it unchanged. A request's `arrival_s` is the moment
its client could send it: when the request before it in that slot ended (its last token; for
a failed request, when the failure was seen). A policy that looks at its queue later than that
(the sequential one finishes the requests it holds first) shows the wait as queueing, inside
TTFT, as a real client would see it.
"""

from __future__ import annotations

from infer_opt.core.timing import HostClock
from infer_opt.workloads.online.server import Request


class ClosedLoop:
    """Requests in id order, handed out while fewer than `concurrency` are in flight.

    `whole`: the engine fills a request in one go when it ends (a served engine writes a
    stream's tokens and stamps when the stream is over), so a request with tokens is over even
    if it is short of `new_tokens` (a server that stopped early); in process a request is over
    when it has all its tokens.
    """

    def __init__(self, requests: list[Request], concurrency: int, whole: bool = False) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.pending = sorted(requests, key=lambda r: r.id)
        self.concurrency = concurrency
        self.whole = whole
        self._next = 0
        self._in_flight: list[Request] = []
        # When each slot freed (seconds on the run's clock), in order: the next requests' arrivals.
        self._freed_s: list[float] = [0.0] * concurrency

    def _over(self, r: Request) -> bool:
        return r.done or r.error is not None or (self.whole and bool(r.stamps_s))

    def _reap(self, now: float) -> None:
        """Free the slots of requests that ended since the last look."""
        still = []
        for r in self._in_flight:
            if self._over(r):
                ended = r.stamps_s[-1] if r.stamps_s and r.error is None else now
                self._freed_s.append(min(ended, now))
            else:
                still.append(r)
        self._in_flight = still
        self._freed_s.sort()

    def due(self, now: float) -> list[Request]:
        self._reap(now)
        out = []
        while self._next < len(self.pending) and self._freed_s:
            r = self.pending[self._next]
            r.arrival_s = self._freed_s.pop(0)
            self._next += 1
            self._in_flight.append(r)
            out.append(r)
        return out

    def next_arrival_s(self) -> float | None:
        """When the next request can be sent: the earliest free slot's time (already past),
        or None while every slot is busy (it depends on a request ending) or none is left."""
        if self._next < len(self.pending) and self._freed_s:
            return self._freed_s[0]
        return None

    @property
    def open(self) -> bool:
        """More requests will come."""
        return self._next < len(self.pending)

    @property
    def in_flight(self) -> int:
        """Requests handed out that have not ended."""
        return sum(not self._over(r) for r in self._in_flight)

    def wait(self, clock: HostClock, until_s: float | None = None) -> None:
        """Sleep until `until_s` when no slot is free (a request ends only through the policy's
        own steps, so nothing else can wake it); return at once when one is."""
        self._reap(clock.now())
        nxt = self.next_arrival_s()
        t = until_s if nxt is None else (nxt if until_s is None else min(nxt, until_s))
        if t is not None:
            clock.sleep_until(t)
