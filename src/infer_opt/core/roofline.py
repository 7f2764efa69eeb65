"""Memory-bandwidth roofline of a decode step (Williams, Waterman & Patterson, "Roofline",
CACM 2009).

With a KV cache, a decode step computes one token per sequence: it reads every weight once and
each sequence's cache once, and does about 2 FLOPs per weight per sequence, far fewer than the
machine could do while those bytes arrive. Such a step is memory-bound, bytes / TPOT is the
bandwidth it achieves, and the machine's measured bandwidth bounds it (roofline_pct).

What one step reads (decode_step_bytes), from facts the engine passes (DecodeStep):
- every weight, as stored: quantized data plus its scales and zero points;
- an embedding table used only by lookup: one row per sequence (the new token's), not the
  whole table;
- the lm_head: untied, its own weight (a Weight like any other); tied, the shared embedding
  table, counted once and in full: the lm_head matmul reads all of it;
- the KV cache of every sequence: a static cache at its allocated length (attention runs over
  max_cache_len positions, masked), a dynamic one at its mean used length over the decode
  steps (mean_cached_len); no cache, nothing (and the step is not memory-bound, below).

When roofline_pct is empty (roofline_pct returns None and the reason): the step must be
memory-bound for bytes / TPOT to mean anything. Its arithmetic intensity (FLOPs per byte read)
is compared with the machine's ridge point (peak FLOP/s / bandwidth): above the ridge the step
is compute-bound and "% of bandwidth" measures nothing. A step without a KV cache recomputes
the whole sequence (hundreds of FLOPs per byte) and is never memory-bound; a large batch or
packed low-bit weights raise the intensity until it crosses the ridge. Without a measured peak,
DEFAULT_RIDGE_FLOP_PER_BYTE holds conservative values: an AVX2/AVX-512 server core does ~100
GFLOP/s fp32 against ~5-10 GB/s of DRAM bandwidth (ridge 10-20), data-center GPUs 10 (fp32) to
300 (bf16 tensor cores); the defaults sit at the low end, so a borderline step gets an empty
column rather than an inflated percentage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from infer_opt.core.timing import synchronize

DEFAULT_RIDGE_FLOP_PER_BYTE = {"cpu": 8.0, "cuda": 32.0}
CACHE_KINDS = ("none", "dynamic", "static")


@dataclass(frozen=True)
class Weight:
    """One stored weight tensor (a shared tensor is listed once)."""

    name: str
    elements: int  # parameters (2 FLOPs each per token through a matmul)
    data_bytes: int  # as stored: packed int8/4-bit data for quantized weights
    scale_bytes: int = 0  # quantization scales and zero points read with the data
    lookup_rows: int = 0  # > 0: an embedding table of this many rows, read by lookup only

    @property
    def stored_bytes(self) -> int:
        return self.data_bytes + self.scale_bytes


@dataclass(frozen=True)
class WeightBytes:
    weights: tuple[Weight, ...]
    # The embedding table the lm_head shares when tied (its matmul reads the whole table); an
    # untied lm_head is a Weight of its own.
    tied_lm_head: str | None = None

    def __post_init__(self) -> None:
        names = [w.name for w in self.weights]
        if self.tied_lm_head is not None and self.tied_lm_head not in names:
            raise ValueError(f"tied_lm_head {self.tied_lm_head!r} is not one of the weights")


@dataclass(frozen=True)
class DecodeStep:
    """What one decode step of a batch reads and computes."""

    weights: WeightBytes
    batch_size: int
    cache: str  # CACHE_KINDS
    kv_bytes_per_token: float = 0  # per sequence, all layers, K and V
    kv_element_bytes: float = 4  # bytes of one cached K or V value (fp32 4, bf16 2, q8_0 1.0625)
    query_groups: int = 1  # query heads per KV head: each cached value serves this many
    allocated_len: int = 0  # static cache: max_cache_len
    mean_context_len: float = 0.0  # dynamic: mean cached length (mean_cached_len); none: the
    # mean sequence length each step recomputes

    def __post_init__(self) -> None:
        if self.cache not in CACHE_KINDS:
            raise ValueError(f"cache must be one of {CACHE_KINDS}, got {self.cache!r}")


def mean_cached_len(prompt_tokens: int, new_tokens: int) -> float:
    """Mean positions attended per decode step with a dynamic cache.

    The first new token comes from prefill; decode step i (i = 1 .. N-1) appends token i and
    attends over P + i positions. The mean of P + i over those steps is P + N/2.
    """
    return prompt_tokens + new_tokens / 2.0


def _weight_bytes(step: DecodeStep) -> float:
    total = 0.0
    for w in step.weights.weights:
        if w.lookup_rows and w.name != step.weights.tied_lm_head:
            total += w.stored_bytes / w.lookup_rows * step.batch_size  # one row per sequence
        else:
            total += w.stored_bytes
    return total


def _cached_positions(step: DecodeStep) -> float:
    if step.cache == "static":
        return float(step.allocated_len)
    if step.cache == "dynamic":
        return step.mean_context_len
    return 0.0


def decode_step_bytes(step: DecodeStep) -> float:
    """Bytes one decode step reads: weights plus every sequence's KV cache (module docstring)."""
    cache = step.kv_bytes_per_token * step.batch_size * _cached_positions(step)
    return _weight_bytes(step) + cache


def decode_step_flops(step: DecodeStep) -> float:
    """Matmul FLOPs (2 per weight per token computed) plus attention over the cache (2 per
    cached value per query head reading it). Without a cache every step recomputes the whole
    sequence: mean_context_len tokens per sequence."""
    matmul = sum(w.elements for w in step.weights.weights
                 if not w.lookup_rows or w.name == step.weights.tied_lm_head)
    tokens = 1.0 if step.cache != "none" else step.mean_context_len
    cached_values = step.kv_bytes_per_token / step.kv_element_bytes * _cached_positions(step)
    attention = 2.0 * step.query_groups * cached_values
    return step.batch_size * (2.0 * matmul * tokens + attention)


def arithmetic_intensity(step: DecodeStep) -> float:
    """FLOPs per byte read by one decode step."""
    return decode_step_flops(step) / decode_step_bytes(step)


def roofline_pct(step: DecodeStep, tpot_ms: float, bandwidth_gb_per_s: float,
                 ridge_flop_per_byte: float) -> tuple[float | None, str]:
    """(achieved bandwidth in % of the measured one, '') for a memory-bound step; (None, why)
    otherwise (module docstring: the rule)."""
    if step.cache == "none":
        return None, ("roofline: no KV cache, every step recomputes the whole sequence "
                      "(compute-bound)")
    intensity = arithmetic_intensity(step)
    if intensity > ridge_flop_per_byte:
        return None, (f"roofline: {intensity:.1f} FLOP/byte per decode step is above the ridge "
                      f"point ({ridge_flop_per_byte:g}): compute-bound")
    if tpot_ms <= 0 or bandwidth_gb_per_s <= 0:
        return None, "roofline: no TPOT or no measured bandwidth"
    achieved = decode_step_bytes(step) / (tpot_ms / 1e3) / 1e9
    pct = 100.0 * achieved / bandwidth_gb_per_s
    if pct > 100.0:
        # Never clamped: the row keeps the figure and says why it can exceed the ceiling.
        return pct, (f"roofline: {pct:.1f}% is above the measured read ceiling "
                     f"({bandwidth_gb_per_s:.1f} GB/s): the bytes counted per step were not all "
                     "read from memory (part of the weights or KV stayed in the CPU caches) or "
                     "the ceiling was measured while the machine was busy")
    return pct, ""


# The CPU read ceiling (measure_bandwidth_gb_per_s): buffer size, tries, reads per try.
CPU_BUFFER_MIB = 2048
CPU_TRIES = 7
CPU_PASSES = 2


def _last_level_cache_bytes() -> int:
    """The largest CPU cache (L3) the kernel reports, summed over its instances; 0 if unknown.
    The read buffer must be far larger, or the probe measures the cache (a 300 MiB L3
    holds a 256 MiB buffer whole)."""
    from pathlib import Path

    best: dict[str, int] = {}
    for f in Path("/sys/devices/system/cpu").glob("cpu*/cache/index*/size"):
        try:
            text = f.read_text().strip()
            shared = (f.parent / "shared_cpu_list").read_text().strip()
            level = int((f.parent / "level").read_text())
        except (OSError, ValueError):
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        size = int(text.rstrip("KMG")) * mult
        best[f"{level}:{shared}"] = size
    top = max((int(k.split(":")[0]) for k in best), default=0)
    return sum(v for k, v in best.items() if int(k.split(":")[0]) == top)


def cpu_buffer_mib() -> int:
    """CPU_BUFFER_MIB, or at least 4x the last-level cache where that is larger;
    $INFER_OPT_BANDWIDTH_MIB overrides it (the tests' runs, which never quote a roofline)."""
    import os

    override = os.environ.get("INFER_OPT_BANDWIDTH_MIB")
    if override:
        return int(override)
    return max(CPU_BUFFER_MIB, 4 * _last_level_cache_bytes() // (1 << 20))


def bandwidth_method(device: str, threads: int) -> str:
    """How measure_bandwidth_gb_per_s measured the ceiling a row's roofline_pct divides by."""
    if device.startswith("cuda"):
        return "cuda device-to-device copy, 512 MiB x 50, (read + written) bytes / time"
    return (f"cpu streaming read (torch sum, {threads} threads) over {cpu_buffer_mib()} MiB "
            f"fp32, {CPU_PASSES} passes per try, best of {CPU_TRIES} tries")


def measure_bandwidth_gb_per_s(device: str, threads: int, size_mib: int | None = None,
                               trials: int = CPU_TRIES) -> float:
    """The machine's read ceiling, measured the way decode reads (bandwidth_method says how).

    CPU: `threads` threads stream-read (torch's vectorized, multi-threaded sum) a buffer far
    larger than the last-level cache (cpu_buffer_mib), CPU_PASSES passes per try, best of
    `trials` tries: the ceiling a decode step could reach, not one unlucky try.
    CUDA: device-to-device copies timed with CUDA events."""
    if device.startswith("cuda"):
        return _cuda_copy_bandwidth_gb_per_s(device, size_mib or 512)
    torch.set_num_threads(threads)
    n = (size_mib or cpu_buffer_mib()) * (1 << 20) // 4
    x = torch.ones(n, dtype=torch.float32, device=device)
    x.sum()  # fault the pages in before timing
    synchronize(device)
    best = float("inf")
    for _ in range(trials):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(CPU_PASSES):
            x.sum()
        synchronize(device)
        best = min(best, (time.perf_counter() - t0) / CPU_PASSES)
    del x
    return n * 4 / best / 1e9


def _cuda_copy_bandwidth_gb_per_s(device: str, size_mib: int, iters: int = 50) -> float:
    """(read + written bytes) per second of `iters` copies of a `size_mib` MiB buffer, timed by
    CUDA events around all of them (one launch's overhead is noise next to 50 x 2 x 512 MiB).
    Not exercised by the tests (no GPU in CI); the same measure as CUDA's bandwidthTest."""
    n = size_mib * (1 << 20)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: allocation and first launch outside the timed region
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1e3  # elapsed_time is in ms
    del src, dst
    return 2 * n * iters / seconds / 1e9  # every byte is read once and written once
