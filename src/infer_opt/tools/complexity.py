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

Generation is timed with the suite's own stepwise loop and clock (timing.clock_for), after a
warm-up run, as the median of `repeats` runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

THEORY = {"attention": 2.0, "generate-no-cache": 2.0, "generate-kv-cache": 1.0}
DESCRIPTION = {
    "attention": "eager causal attention op alone, time vs sequence length n",
    "generate-no-cache": "generate n new tokens, no KV cache (baseline), time vs n",
    "generate-kv-cache": "generate n new tokens with a dynamic KV cache, time vs n",
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


def _median(values: list[float]) -> float:
    from infer_opt.core.stats import Stats

    return Stats.of(values).p50


def time_attention(n: int, heads: int, head_dim: int, repeats: int, device: str,
                   seed: int = 0) -> float:
    """Median seconds of one eager causal attention op on [1, heads, n, head_dim] inputs."""
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
    return _median(times)


def time_generation(engine: Any, prompts: Any, n: int, repeats: int, device: str) -> float:
    """Median seconds to generate n tokens (prefill included) through the decode loop."""
    from infer_opt.core.timing import clock_for
    from infer_opt.engines.decode import generate

    clock = clock_for(device)
    times = []
    with engine.context():
        for _ in range(repeats):
            run = generate(engine, prompts, n, clock)
            times.append(run.e2e_s)
    return _median(times)


@dataclass(frozen=True)
class Point:
    series: str
    n: int
    seconds: float


def measure(model: str, device: str, threads: int, attn_lengths: Sequence[int],
            gen_lengths: Sequence[int], cached_lengths: Sequence[int], prompt_tokens: int,
            repeats: int, attn_repeats: int, log: Callable[[str], None]) -> list[Point]:
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
        t = time_attention(n, heads, head_dim, attn_repeats, device)
        points.append(Point("attention", n, t))
        log(f"attention n={n}: {t * 1e3:.2f} ms")
    prompts = prompt_batch(1, prompt_tokens, ref.vocab_size, load_tokenizer(ref))  # [1, P]
    for series, lengths, kv in (("generate-no-cache", gen_lengths, "none"),
                                ("generate-kv-cache", cached_lengths, "dynamic")):
        engine = no_cache
        if kv != "none":
            cached = build_stack("kv-cache", device)  # fp32, eager: the baseline plus a cache
            engine = cached.engine(ref, cached.settings)
        time_generation(engine, prompts, min(lengths), 1, device)  # warm-up, untimed
        for n in lengths:
            t = time_generation(engine, prompts, n, repeats, device)
            points.append(Point(series, n, t))
            log(f"{series} n={n}: {t:.3f} s")
    return points


def fits(points: Sequence[Point]) -> dict[str, Fit]:
    out = {}
    for series in THEORY:
        pts = [p for p in points if p.series == series]
        if len(pts) >= 2:
            out[series] = fit_power_law([p.n for p in pts], [p.seconds for p in pts])
    return out


def render(points: Sequence[Point], header: str, plot_name: str | None) -> str:
    from infer_opt.results.markdown import table

    body = []
    for series, fit in fits(points).items():
        ns = [p.n for p in points if p.series == series]
        body.append([series, DESCRIPTION[series], f"{min(ns)}..{max(ns)}", fit.points,
                     f"{fit.exponent:.2f}", f"{fit.r2:.3f}", f"{THEORY[series]:.0f}"])
    lines = [f"# Complexity fits\n\n{header}\n",
             table(["series", "what is timed", "n range", "points", "measured exponent", "R^2",
                    "theory"], body),
             "", table(["series", "n", "time ms"],
                       [[p.series, p.n, f"{p.seconds * 1e3:.3f}"] for p in points])]
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
