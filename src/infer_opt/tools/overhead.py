"""How much does the measuring harness itself cost? (target: <= 1% of TPOT)

Two figures, on a real model, both through the one decode loop (engines/decode.generate):
- direct: the per-token work the clock adds (a stamp), timed in isolation over many
  iterations, divided by the per-token time of the loop without a clock;
- A/B: the loop with a no-op clock and with the real clock, interleaved `rounds` times; the
  difference of their median per-token times (noisy on a shared CPU: a bound, not a precise
  figure).

Run: python -m infer_opt.tools.overhead [--model smollm2-135m] [--variant kv-cache] [--tokens 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from infer_opt.core.models import load_tokenizer, resolve
from infer_opt.core.prompts import prompt_batch
from infer_opt.core.stack import build_stack
from infer_opt.core.stats import Stats
from infer_opt.core.timing import HostClock
from infer_opt.engines.decode import generate


class NullClock:
    """A clock that records nothing: the decode loop without its instrumentation."""

    def start(self) -> None:
        pass

    def stamp(self) -> None:
        pass

    def finish(self) -> list[float]:
        return []


def bare_generate(engine: object, prompts: torch.Tensor, new_tokens: int) -> float:
    """The same decode loop with a no-op clock; seconds, timed from outside."""
    t0 = time.perf_counter()
    generate(engine, prompts, new_tokens, NullClock())  # type: ignore[arg-type]
    return time.perf_counter() - t0


def instrumentation_cost_s(iterations: int = 200_000) -> float:
    """Seconds per token of what the clock adds to the loop: one clock.stamp()."""
    clock = HostClock()
    clock.start()
    t0 = time.perf_counter()
    for _ in range(iterations):
        clock.stamp()
    return (time.perf_counter() - t0) / iterations


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--variant", default="kv-cache")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref = resolve(args.model)
    stack = build_stack(args.variant, "cpu")
    if stack.unavailable:
        raise SystemExit(stack.unavailable)
    engine = stack.engine(ref, stack.settings)
    prompts = prompt_batch(1, args.prompt, ref.vocab_size, load_tokenizer(ref))
    n = args.tokens
    bare, instrumented = [], []
    with engine.context():
        bare_generate(engine, prompts, n)  # warm-up
        for _ in range(args.rounds):
            bare.append(bare_generate(engine, prompts, n) / n)
            run = generate(engine, prompts, n, HostClock())
            instrumented.append(run.e2e_s / n)
    per_token_bare = Stats.of(bare).p50
    direct = instrumentation_cost_s()
    ab = Stats.of(instrumented).p50 - per_token_bare
    print(f"model {ref.name}, variant {args.variant}, {n} tokens, {args.threads} threads")
    print(f"bare loop: {per_token_bare * 1e3:.3f} ms/token (median of {args.rounds})")
    print(f"direct instrumentation cost: {direct * 1e9:.0f} ns/token = "
          f"{100 * direct / per_token_bare:.4f}% of TPOT")
    print(f"A/B instrumented - bare: {ab * 1e3:+.3f} ms/token = {100 * ab / per_token_bare:+.2f}% "
          "(includes run-to-run noise)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
