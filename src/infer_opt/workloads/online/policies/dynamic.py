"""Dynamic (request-level) batching: a queue, a maximum batch size and a maximum wait.

The batcher waits for the first queued request, then keeps collecting until the batch is full
or the oldest request has waited `max_wait_ms`; it serves that batch to completion (finished
rows leave, nobody joins) before forming the next one. Like a real server it does not know
future arrivals: with a partly filled batch it waits out the deadline. As in Triton's and
TorchServe's dynamic batchers, requests arriving during a batch wait for the next one.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from infer_opt.core.timing import HostClock
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
    max_bs, max_wait_s = opts.max_batch_size, opts.max_wait_ms / 1e3

    def collect() -> None:
        for r in source.due(clock.now()):
            by_id[r.id] = r
            queue.append(r)

    while source.open or queue:
        collect()
        if not queue:
            source.wait(clock)
            continue
        deadline = queue[0].arrival_s + max_wait_s
        while len(queue) < max_bs and clock.now() < deadline:
            source.wait(clock, deadline)
            collect()
        batch = [queue.popleft() for _ in range(min(max_bs, len(queue)))]
        run = prefill_stamped(engine, batch, clock, prefix, stats)
        while run is not None:
            run = decode_stamped(engine, run, by_id, clock, stats)
    return stats
