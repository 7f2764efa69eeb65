"""Seeded arrival times and request lengths.

Inter-arrival gaps: Poisson process at rate λ = exponential gaps with mean 1/λ; gamma with
shape k = `burstiness` and scale 1/(λ k) keeps the mean 1/λ while k < 1 makes arrivals
burstier and k > 1 more regular (vLLM's benchmark_serving uses the same knob); offline = every
request is there at t = 0. The first request arrives at t = 0. With `concurrency` (N
closed-loop clients) no time is known up front: each request arrives when a client is free
(workloads/online/closed_loop.py), so the times here are placeholders (0).
"""

from __future__ import annotations

import random

ARRIVALS = ("poisson", "gamma", "offline", "concurrency")
LENGTHS = ("fixed", "uniform")


def arrival_times(n: int, arrival: str, rate_per_s: float, burstiness: float = 1.0,
                  seed: int = 0) -> list[float]:
    """n arrival times in seconds, ascending, the first at 0."""
    if arrival in ("offline", "concurrency"):
        return [0.0] * n
    rng = random.Random(f"arrivals-{seed}")
    times, t = [], 0.0
    for i in range(n):
        if i > 0:
            if arrival == "poisson":
                t += rng.expovariate(rate_per_s)
            elif arrival == "gamma":
                t += rng.gammavariate(burstiness, 1.0 / (rate_per_s * burstiness))
            else:
                raise ValueError(f"unknown arrival {arrival!r}")
        times.append(t)
    return times


def lengths(n: int, mean: int, dist: str, spread: float, seed: int, salt: str) -> list[int]:
    """n integer lengths: `fixed` = mean; `uniform` = uniform integers in
    [mean (1 - spread), mean (1 + spread)], at least 1."""
    if dist == "fixed":
        return [mean] * n
    rng = random.Random(f"{salt}-{seed}")
    lo, hi = max(1, round(mean * (1 - spread))), max(1, round(mean * (1 + spread)))
    return [rng.randint(lo, hi) for _ in range(n)]
