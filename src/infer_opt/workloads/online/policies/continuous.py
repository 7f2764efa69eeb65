"""Continuous (iteration-level) batching, after Orca (Yu et al., OSDI 2022).

Between two decode steps the scheduler admits queued requests while fewer than
`max_batch_size` sequences are running: it prefills the newcomers as one padded batch, and
their KV rows join the running cache (`decode.merge`); rows leave as soon as their last token
is out. Prefill of newcomers is not chunked: it delays the running rows' next token by one
prefill (as vLLM's default scheduler did before chunked prefill).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from infer_opt.core.timing import HostClock
from infer_opt.engines import decode
from infer_opt.workloads.online.server import (
    Arrivals,
    Request,
    ServerCounters,
    decode_stamped,
    prefill_stamped,
)


def serve(engine: Any, requests: list[Request], clock: HostClock, opts: Any,
          prefix: Any = None) -> ServerCounters:
    stats = ServerCounters()
    by_id = {r.id: r for r in requests}
    arrivals = Arrivals(requests)
    queue: deque[Request] = deque()
    run = None
    finished = 0
    while finished < len(requests):
        queue.extend(arrivals.due(clock.now()))
        if run is None and not queue:
            nxt = arrivals.next_arrival_s()
            assert nxt is not None
            clock.sleep_until(nxt)
            continue
        free = opts.max_batch_size - (0 if run is None else run.size)
        if queue and free > 0:
            batch = [queue.popleft() for _ in range(min(free, len(queue)))]
            joined = prefill_stamped(engine, batch, clock, prefix, stats)
            if joined is not None:
                run = decode.merge(engine, run, joined)
        elif run is not None:
            run = decode_stamped(engine, run, by_id, clock, stats)
        finished = sum(r.done for r in requests)
    return stats
