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
    Request,
    ServerCounters,
    decode_stamped,
    prefill_stamped,
    source_of,
)


def serve(engine: Any, requests: Any, clock: HostClock, opts: Any,
          prefix: Any = None) -> ServerCounters:
    stats = ServerCounters()
    source = source_of(requests)
    by_id: dict[int, Request] = {}
    queue: deque[Request] = deque()
    run = None
    while source.open or queue or run is not None:
        for r in source.due(clock.now()):
            by_id[r.id] = r
            queue.append(r)
        if run is None and not queue:
            source.wait(clock)
            continue
        free = opts.max_batch_size - (0 if run is None else run.size)
        if queue and free > 0:
            batch = [queue.popleft() for _ in range(min(free, len(queue)))]
            joined = prefill_stamped(engine, batch, clock, prefix, stats)
            if joined is not None:
                run = decode.merge(engine, run, joined)
        elif run is not None:
            run = decode_stamped(engine, run, by_id, clock, stats)
    return stats
