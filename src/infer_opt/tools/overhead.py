"""How much does the measuring harness itself cost? (target: <= 1% of TPOT)

Two figures, on a real model:
- direct: the per-token work the instrumented loop adds over a bare loop (a clock stamp and a
  list append), timed in isolation over many iterations, divided by the bare TPOT;
- A/B: bare and instrumented generation interleaved `rounds` times; the difference of their
  median per-token times (noisy on a shared CPU: a bound, not a precise figure).

Run: python -m infer_opt.tools.overhead [--model smollm2-135m] [--variant kv-cache] [--tokens 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from infer_opt.engines.base import stepwise_generate
from infer_opt.core.models import load_tokenizer, resolve
from infer_opt.core.plugin import build_settings, parse_variant
from infer_opt.core.prompts import prompt_batch
from infer_opt.core.stats import Stats
from infer_opt.core.timing import HostClock


def bare_generate(session: object, prompts: torch.Tensor, new_tokens: int) -> float:
    """The same prefill + greedy decode steps with no clock and no token list; seconds."""
    batch, prompt_len = prompts.shape
    session.begin(batch, prompt_len + new_tokens)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    logits = session.prefill(prompts)  # type: ignore[attr-defined]
    next_ids = logits.argmax(dim=-1, keepdim=True)
    for _ in range(new_tokens - 1):
        logits = session.decode(next_ids)  # type: ignore[attr-defined]
        next_ids = logits.argmax(dim=-1, keepdim=True)
    return time.perf_counter() - t0


def instrumentation_cost_s(iterations: int = 200_000) -> float:
    """Seconds per token of what stepwise_generate adds: clock.stamp() + out.append()."""
    clock = HostClock()
    token = torch.zeros(1, 1, dtype=torch.long)
    out: list[torch.Tensor] = []
    clock.start()
    t0 = time.perf_counter()
    for _ in range(iterations):
        clock.stamp()
        out.append(token)
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
    from infer_opt.engines.torch_engine import TorchBackend

    ref = resolve(args.model)
    settings, reason = build_settings(parse_variant(args.variant), "cpu")
    if reason:
        raise SystemExit(reason)
    backend = TorchBackend(ref, settings)
    prompts = prompt_batch(1, args.prompt, ref.vocab_size, load_tokenizer(ref))
    n = args.tokens
    bare, instrumented = [], []
    with backend.context():
        bare_generate(backend, prompts, n)  # warm-up
        for _ in range(args.rounds):
            bare.append(bare_generate(backend, prompts, n) / n)
            run = stepwise_generate(backend, prompts, n, HostClock())
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
