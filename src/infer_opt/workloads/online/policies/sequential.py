"""Sequential batch-1 serving: one request at a time, in arrival order (the baseline policy)."""

from __future__ import annotations

from typing import Any

from infer_opt.core.timing import HostClock
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
    for r in Arrivals(requests).pending:
        clock.sleep_until(r.arrival_s)  # idle until it is due; later ones wait in the queue
        run = prefill_stamped(engine, [r], clock, prefix, stats)
        while run is not None:
            run = decode_stamped(engine, run, by_id, clock, stats)
    return stats
