"""Sequential batch-1 serving: one request at a time, in arrival order (the baseline policy)."""

from __future__ import annotations

from typing import Any

from infer_opt.core.timing import HostClock
from infer_opt.workloads.online.server import (
    ServerCounters,
    decode_stamped,
    prefill_stamped,
    source_of,
)


def serve(engine: Any, requests: Any, clock: HostClock, opts: Any,
          prefix: Any = None) -> ServerCounters:
    stats = ServerCounters()
    source = source_of(requests)
    while source.open:
        source.wait(clock)  # idle until one is due; later ones wait in the queue
        for r in source.due(clock.now()):
            run = prefill_stamped(engine, [r], clock, prefix, stats)
            while run is not None:
                run = decode_stamped(engine, run, {r.id: r}, clock, stats)
    return stats
