"""Complexity fits: measured growth of time with sequence length against the theory.

Three series, each timed over a sweep of lengths n and fitted as t = c * n^k by least squares on
(ln n, ln t); R^2 is computed on the log values.

- attention: one eager causal self-attention op alone (softmax(QK^T / sqrt(d)) V with the
  model's head count and head size, batch 1). QK^T and PV are H*n^2*d multiply-adds each, so
  k -> 2 once n is long enough that the n^2 terms dominate the O(n*d) work around them.
- generation without KV cache: n new tokens after a short prompt, every step recomputing the
  whole sequence (the pinned baseline). Step i costs O(p + i) (linear layers on p+i positions,
  plus an (p+i)^2 attention term), so the sum over n steps grows like n^2.
- generation with KV cache: each step runs one position against the cache; the step cost is
  dominated by reading the weights, so the sum grows like n (the attention read of the cache adds
  an O(n^2) term that is negligible at these lengths on a small model).

Over depth (long context, eager attention with a dynamic KV cache, fp32, batch 1):

- decode-step-at-depth: the median decode step (inter-token gap) after a context of d tokens
  already in the cache (prefilled outside the clock, engines/decode.prefill_context). A step
  reads every weight (constant) plus d cached positions: t = a + b*d, linear in d.
- prefill-vs-length: one prefill of an n-token prompt; linear layers cost O(n), eager attention
  O(n^2), so the power-law exponent rises toward 2 as n grows (to 8192 for SmolLM2-135M).
- kv-bytes-at-depth: bytes the cache holds after d tokens (Engine.kv_memory): exactly linear,
  the slope is the KV bytes per token.

Generation is timed with the suite's own stepwise loop and clock (timing.clock_for), after a
warm-up run, as the median of `repeats` runs. Every fit carries a 95% bootstrap interval of
its exponent (or slope): each resample draws, for every n, the median of a resample of that
n's repeated timings, and refits (fit_interval); one repeat per n gives no interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

THEORY = {"attention": 2.0, "generate-no-cache": 2.0, "generate-kv-cache": 1.0,
          "prefill-vs-length": 2.0}
# Series fitted as t = a + b*n (linear with an intercept), not as a power law.
LINEAR = {"decode-step-at-depth": "linear", "kv-bytes-at-depth": "linear"}
DESCRIPTION = {
    "attention": "eager causal attention op alone, time vs sequence length n",
    "generate-no-cache": "generate n new tokens, no KV cache (baseline), time vs n",
    "generate-kv-cache": "generate n new tokens with a dynamic KV cache, time vs n",
    "prefill-vs-length": "prefill of an n-token prompt (eager, KV cache), time vs n",
    "decode-step-at-depth": "one decode step after n tokens of context in the KV cache",
    "kv-bytes-at-depth": "bytes the KV cache holds after n tokens (value = bytes, not time)",
}


@dataclass(frozen=True)
class Fit:
    exponent: float  # k in t = c * n^k
    coefficient: float  # c
    r2: float  # on ln t
    points: int


def fit_power_law(ns: Sequence[float], ts: Sequence[float]) -> Fit:
    """Least-squares fit of ln t = k ln n + ln c over at least two distinct n."""
    if len(ns) != len(ts) or len(ns) < 2:
        raise ValueError("a power-law fit needs at least two (n, t) points")
    if any(n <= 0 for n in ns) or any(t <= 0 for t in ts):
        raise ValueError("a power-law fit needs n > 0 and t > 0")
    xs = [math.log(n) for n in ns]
    ys = [math.log(t) for t in ts]
    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a power-law fit needs at least two distinct n")
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys))
    k = sxy / sxx
    b = my - k * mx
    ss_res = math.fsum((y - (k * x + b)) ** 2 for x, y in zip(xs, ys))
    ss_tot = math.fsum((y - my) ** 2 for y in ys)
    r2 = 1.0 if ss_tot == 0 else 1.0 - ss_res / ss_tot
    return Fit(exponent=k, coefficient=math.exp(b), r2=r2, points=len(ns))


@dataclass(frozen=True)
class LinearFit:
    slope: float  # b in t = a + b*n
    intercept: float  # a
    r2: float
    points: int


def fit_linear(ns: Sequence[float], ts: Sequence[float]) -> LinearFit:
    """Least-squares t = a + b*n over at least two distinct n."""
    if len(ns) != len(ts) or len(ns) < 2:
        raise ValueError("a linear fit needs at least two (n, t) points")
    mx, my = math.fsum(ns) / len(ns), math.fsum(ts) / len(ts)
    sxx = math.fsum((x - mx) ** 2 for x in ns)
    if sxx == 0:
        raise ValueError("a linear fit needs at least two distinct n")
    b = math.fsum((x - mx) * (y - my) for x, y in zip(ns, ts)) / sxx
    a = my - b * mx
    ss_res = math.fsum((y - (a + b * x)) ** 2 for x, y in zip(ns, ts))
    ss_tot = math.fsum((y - my) ** 2 for y in ts)
    return LinearFit(b, a, 1.0 if ss_tot == 0 else 1.0 - ss_res / ss_tot, len(ns))


def fit_interval(samples: dict[int, Sequence[float]], linear: bool, resamples: int = 1000,
                 seed: int = 0, confidence: float = 0.95) -> tuple[float, float] | None:
    """95% bootstrap interval of the fitted exponent (power law) or slope (linear): each
    resample takes, for every n, the median of a resample of its repeats, then refits. None
    when no n has two repeats (nothing says how the points vary)."""
    import random

    from infer_opt.core.stats import percentile

    if all(len(v) < 2 for v in samples.values()) or len(samples) < 2:
        return None
    rng = random.Random(seed)
    ns = sorted(samples)
    values = []
    for _ in range(resamples):
        ts = [_median([rng.choice(list(samples[n])) for _ in samples[n]]) for n in ns]
        fit = fit_linear(ns, ts).slope if linear else fit_power_law(ns, ts).exponent
        values.append(fit)
    values.sort()
    tail = (1 - confidence) / 2 * 100
    return percentile(values, tail), percentile(values, 100 - tail)


def _median(values: list[float]) -> float:
    from infer_opt.core.stats import Stats

    return Stats.of(values).p50


def time_attention(n: int, heads: int, head_dim: int, repeats: int, device: str,
                   seed: int = 0) -> list[float]:
    """Seconds of one eager causal attention op on [1, heads, n, head_dim] inputs, per repeat."""
    import torch

    from infer_opt.core.timing import clock_for

    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, heads, n, head_dim, generator=g).to(device) for _ in range(3))
    # Additive causal mask [n, n]: -inf above the diagonal, as eager attention builds it.
    mask = torch.full((n, n), float("-inf"), device=device).triu(1)
    scale = 1.0 / math.sqrt(head_dim)

    def op() -> torch.Tensor:
        scores = (q @ k.transpose(-1, -2)) * scale + mask  # [1, H, n, n]
        return torch.softmax(scores, dim=-1) @ v  # [1, H, n, d]

    clock = clock_for(device)
    times = []
    with torch.inference_mode():
        op()  # warm-up: allocator and kernels
        for _ in range(repeats):
            clock.start()
            op()
            clock.stamp()
            times.append(clock.finish()[-1])
    return times


def time_generation(engine: Any, prompts: Any, n: int, repeats: int, device: str) -> list[float]:
    """Seconds to generate n tokens (prefill included) through the decode loop, per repeat."""
    from infer_opt.core.timing import clock_for
    from infer_opt.engines.decode import generate

    clock = clock_for(device)
    times = []
    with engine.context():
        for _ in range(repeats):
            run = generate(engine, prompts, n, clock)
            times.append(run.e2e_s)
    return times


@dataclass(frozen=True)
class Point:
    series: str
    n: int
    seconds: float  # the median; for kv-bytes-at-depth, bytes
    samples: tuple[float, ...] = ()  # every repeat behind the median


def time_prefill(engine: Any, prompts: Any, repeats: int, device: str) -> list[float]:
    """Seconds of one prefill of prompts [1, n] into a new cache, each of `repeats` runs."""
    from infer_opt.core.timing import clock_for
    from infer_opt.engines.decode import prefill

    clock = clock_for(device)
    times = []
    with engine.context():
        for _ in range(repeats):
            clock.start()
            prefill(engine, prompts, [0], prompts.shape[1])
            clock.stamp()
            times.append(clock.finish()[-1])
    return times


def measure_depths(engine: Any, context: Any, depths: Sequence[int], new_tokens: int,
                   repeats: int, device: str, log: Callable[[str], None]) -> list[Point]:
    """Decode step time and KV bytes at each depth. The context [1, max depth] is prefilled
    once, growing from one depth to the next outside the clock; at each depth every repeat
    starts from the same cache (Engine.checkpoint) and decodes `new_tokens` tokens."""
    from dataclasses import replace

    from infer_opt.core.timing import clock_for
    from infer_opt.engines.decode import extend, generate_at_depth, prefill_context

    clock = clock_for(device)
    ds = sorted(depths)
    capacity = ds[-1] + 1 + new_tokens
    points: list[Point] = []
    with engine.context():
        rows = prefill_context(engine, context[:, :ds[0]], capacity)
        restore = engine.checkpoint(rows.cache, ds[0])
        for i, d in enumerate(ds):
            if i:  # grow the context from the previous depth, 512 tokens per step
                rows = replace(rows, cache=restore())
                for lo in range(ds[i - 1], d, 512):
                    extend(engine, rows, context[:, lo:min(lo + 512, d)])
            restore = engine.checkpoint(rows.cache, d)
            steps: list[float] = []
            kv_bytes: list[float] = []
            for r in range(repeats + 1):  # the first is a warm-up
                run = generate_at_depth(engine, replace(rows, cache=restore()),
                                        context[:, d:d + 1], new_tokens, clock)
                if r:
                    steps.append(_median(run.itl_s))
                    kv = engine.kv_memory(run.cache, d + new_tokens)
                    kv_bytes.append(float(kv.used_bytes) if kv is not None else 0.0)
            points.append(Point("decode-step-at-depth", d, _median(steps), tuple(steps)))
            points.append(Point("kv-bytes-at-depth", d, _median(kv_bytes), tuple(kv_bytes)))
            log(f"depth {d}: decode step {_median(steps) * 1e3:.2f} ms, KV "
                f"{_median(kv_bytes):.0f} bytes")
    return points


def measure(model: str, device: str, threads: int, attn_lengths: Sequence[int],
            gen_lengths: Sequence[int], cached_lengths: Sequence[int], prompt_tokens: int,
            repeats: int, attn_repeats: int, log: Callable[[str], None],
            prefill_lengths: Sequence[int] = (), depths: Sequence[int] = (),
            depth_new_tokens: int = 16) -> list[Point]:
    import torch

    from infer_opt.core.models import load_tokenizer, resolve
    from infer_opt.core.prompts import prompt_batch
    from infer_opt.core.stack import build_stack

    torch.set_num_threads(threads)
    ref = resolve(model)
    points: list[Point] = []
    # Both load the model eagerly in fp32; they differ only in the KV-cache policy.
    stack = build_stack("baseline", device)
    no_cache = stack.engine(ref, stack.settings)
    config = no_cache.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    for n in attn_lengths:
        ts = time_attention(n, heads, head_dim, attn_repeats, device)
        points.append(Point("attention", n, _median(ts), tuple(ts)))
        log(f"attention n={n}: {_median(ts) * 1e3:.2f} ms")
    prompts = prompt_batch(1, prompt_tokens, ref.vocab_size, load_tokenizer(ref))  # [1, P]
    for series, lengths, kv in (("generate-no-cache", gen_lengths, "none"),
                                ("generate-kv-cache", cached_lengths, "dynamic")):
        engine = no_cache
        if kv != "none":
            cached = build_stack("kv-cache", device)  # fp32, eager: the baseline plus a cache
            engine = cached.engine(ref, cached.settings)
        time_generation(engine, prompts, min(lengths), 1, device)  # warm-up, untimed
        for n in lengths:
            ts = time_generation(engine, prompts, n, repeats, device)
            points.append(Point(series, n, _median(ts), tuple(ts)))
            log(f"{series} n={n}: {_median(ts):.3f} s")
    if prefill_lengths or depths:
        cached = build_stack("kv-cache", device)  # fp32, eager attention, dynamic cache
        engine = cached.engine(ref, cached.settings)
        longest = max([*prefill_lengths, *(d + 1 for d in depths)])
        text = prompt_batch(1, longest, ref.vocab_size, load_tokenizer(ref))  # [1, longest]
        if prefill_lengths:
            time_prefill(engine, text[:, :min(prefill_lengths)], 1, device)  # warm-up
        for n in prefill_lengths:
            ts = time_prefill(engine, text[:, :n], max(repeats, 1), device)
            points.append(Point("prefill-vs-length", n, _median(ts), tuple(ts)))
            log(f"prefill n={n}: {_median(ts):.3f} s")
        if depths:
            points += measure_depths(engine, text, depths, depth_new_tokens, repeats, device,
                                     log)
    return points


def fits(points: Sequence[Point]) -> dict[str, Fit]:
    out = {}
    for series in THEORY:
        pts = [p for p in points if p.series == series]
        if len(pts) >= 2:
            out[series] = fit_power_law([p.n for p in pts], [p.seconds for p in pts])
    return out


def linear_fits(points: Sequence[Point]) -> dict[str, LinearFit]:
    out = {}
    for series in LINEAR:
        pts = [p for p in points if p.series == series]
        if len(pts) >= 2:
            out[series] = fit_linear([p.n for p in pts], [p.seconds for p in pts])
    return out


def interval(points: Sequence[Point], series: str) -> tuple[float, float] | None:
    samples = {p.n: p.samples or (p.seconds,) for p in points if p.series == series}
    return fit_interval(samples, series in LINEAR)


def _value(p: Point) -> float:
    """A point as the report shows it: bytes for kv-bytes-at-depth, else milliseconds."""
    return p.seconds if p.series == "kv-bytes-at-depth" else p.seconds * 1e3


def _ci(ci: tuple[float, float] | None, fmt: str) -> str:
    return "n/a (1 repeat)" if ci is None else f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def render(points: Sequence[Point], header: str, plot_name: str | None) -> str:
    from infer_opt.results.markdown import table

    body = []
    for series, fit in fits(points).items():
        ns = [p.n for p in points if p.series == series]
        body.append([series, DESCRIPTION[series], f"{min(ns)}..{max(ns)}", fit.points,
                     f"{fit.exponent:.2f}", _ci(interval(points, series), ".2f"),
                     f"{fit.r2:.3f}", f"{THEORY[series]:.0f}"])
    lines = [f"# Complexity fits\n\n{header}\n",
             table(["series", "what is timed", "n range", "points", "measured exponent",
                    "95% CI", "R^2", "theory"], body)]
    lin = linear_fits(points)
    if lin:
        rows = []
        for series, f in lin.items():
            ns = [p.n for p in points if p.series == series]
            unit = "bytes" if series.startswith("kv-bytes") else "ms"
            scale = 1.0 if unit == "bytes" else 1e3
            ci = interval(points, series)
            ci_scaled = None if ci is None else (ci[0] * scale, ci[1] * scale)
            rows.append([series, DESCRIPTION[series], f"{min(ns)}..{max(ns)}", f.points,
                         f"{f.slope * scale:.6g} {unit}", _ci(ci_scaled, ".6g"),
                         f"{f.intercept * scale:.6g} {unit}", f"{f.r2:.4f}"])
        lines += ["", table(["series", "what", "n range", "points", "slope per token", "95% CI",
                             "intercept", "R^2"], rows)]
    lines += ["", table(["series", "n", "time ms (bytes for kv-bytes-at-depth)"],
                        [[p.series, p.n, f"{_value(p):.6g}"] for p in points])]
    if plot_name:
        lines += ["", f"![log-log plot of time vs n]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot(points: Sequence[Point], path: Any) -> None:
    from infer_opt.results.plots import figure, save

    fig, grid = figure()
    ax = grid[0][0]
    for series, fit in fits(points).items():
        pts = [p for p in points if p.series == series]
        ns = [p.n for p in pts]
        ts = [p.seconds * 1e3 for p in pts]
        line = ax.plot(ns, ts, "o", label=f"{series}: k={fit.exponent:.2f} (theory "
                                          f"{THEORY[series]:.0f}), R²={fit.r2:.3f}")[0]
        fitted = [fit.coefficient * n ** fit.exponent * 1e3 for n in ns]
        ax.plot(ns, fitted, "-", color=line.get_color(), alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length n (tokens)")
    ax.set_ylabel("time (ms, log)")
    ax.set_title("time vs n, log-log: slope = fitted exponent")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path, dpi=100)
