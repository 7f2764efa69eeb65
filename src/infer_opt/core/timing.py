"""The suite's one timing primitive (the online server's wall clock is HostClock too).

CPU: `time.perf_counter` after any pending device work is done (there is none on CPU).
CUDA: one `torch.cuda.Event(enable_timing=True)` per stamp, recorded on the current stream, and
one synchronize when the request ends; event times are GPU-side, so they need no sync per step
and still include any gap where the GPU waited for the host.
"""

from __future__ import annotations

import time
from typing import Any, Protocol


class Clock(Protocol):
    def start(self) -> None: ...
    def stamp(self) -> None: ...
    def finish(self) -> list[float]:
        """Seconds from start() to each stamp(), in order; waits for the device."""
        ...


class HostClock:
    """perf_counter seconds since start() (or creation). The online server also reads it
    directly (`now`) and sleeps on its scale until a request is due (`sleep_until`)."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._stamps: list[float] = []

    def start(self) -> None:
        self._stamps = []
        self._t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._t0

    def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            time.sleep(delay)

    def stamp(self) -> None:
        self._stamps.append(time.perf_counter())

    def finish(self) -> list[float]:
        return [t - self._t0 for t in self._stamps]


class CudaEventClock:
    def __init__(self, torch_module: Any) -> None:
        self._torch = torch_module
        self._start: Any = None
        self._events: list[Any] = []

    def _event(self) -> Any:
        ev = self._torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def start(self) -> None:
        # Work queued before the request must not count towards it.
        self._torch.cuda.synchronize()
        self._events = []
        self._start = self._event()

    def stamp(self) -> None:
        self._events.append(self._event())

    def finish(self) -> list[float]:
        self._torch.cuda.synchronize()
        return [self._start.elapsed_time(ev) / 1000.0 for ev in self._events]


def clock_for(device: str) -> Clock:
    if device.startswith("cuda"):
        import torch

        return CudaEventClock(torch)
    return HostClock()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
