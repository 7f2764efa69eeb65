"""Memory-bandwidth roofline: decode reads every weight (and the KV cache) once per step, so
bytes-per-step / TPOT is the bandwidth a variant achieves, and the machine's bandwidth bounds it.
"""

from __future__ import annotations

import time

import torch

from infer_opt.core.timing import synchronize


def measure_bandwidth_gb_per_s(device: str, threads: int, size_mib: int = 512, trials: int = 5) -> float:
    """Best-of-`trials` read bandwidth: sum over a `size_mib` MiB fp32 tensor."""
    torch.set_num_threads(threads)
    n = size_mib * (1 << 20) // 4
    x = torch.ones(n, dtype=torch.float32, device=device)
    x.sum()  # fault the pages in before timing
    synchronize(device)
    best = float("inf")
    for _ in range(trials):
        synchronize(device)
        t0 = time.perf_counter()
        x.sum()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    del x
    return n * 4 / best / 1e9


def bytes_per_decode_step(weight_bytes: int, kv_bytes_per_token: int, batch_size: int,
                          prompt_tokens: int, new_tokens: int) -> float:
    """Weights once + every sequence's cache at its mean length over the decode steps."""
    mean_cached = prompt_tokens + new_tokens / 2.0
    return weight_bytes + kv_bytes_per_token * batch_size * mean_cached
