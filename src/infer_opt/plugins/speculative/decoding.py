"""Speculative decoding (greedy): a draft proposes k tokens, the target verifies them in one
forward, and the cache is rolled back past the first rejection.

Leviathan et al., "Fast Inference from Transformers via Speculative Decoding" (2023), with
greedy acceptance: a drafted token is kept while it equals the target's own greedy token at
that position, so the output is the target's greedy output, only produced with fewer target
forwards (a verify of T tokens costs about one decode step on memory-bound hardware).

One round, with L slots in the target's cache and `last` the newest token (not cached yet):

    drafts  d1..dk                   drafter.propose(context, k)
    verify  [last, d1..dk]           one target step, T = k + 1 tokens at positions L..L+k,
                                     logits for all T positions -> greedy g0..gk
    accept  a = leading i with d(i+1) == g(i)
    emit    d1..da, g(a)             a + 1 tokens (g(a): the target's own token after the last
                                     accepted draft, so every round makes progress)
    cache   cropped to L + 1 + a     the rejected drafts' keys/values are dropped

The loop drives `engine.step` (so the stack's step wrappers apply) through the plugin hook
`Settings.decoder` (engines/decode.generate calls it). Batch 1 only: rows would accept different
numbers of tokens (plugins declare max_batch_size = 1, and the plan refuses more).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import torch

from infer_opt.core.plugin import Metric
from infer_opt.core.timing import Clock
from infer_opt.engines.base import BatchRun, Engine, StepInput

# Row columns every speculative plugin declares; derived from Settings.counters (which the
# static workload clears after its warm-up) after each generate call, so they cover the timed
# runs only.
METRICS = (
    Metric("acceptance_rate_pct", "higher", "drafted tokens the target accepted, %"),
    Metric("tokens_per_target_forward", "higher", "tokens generated per target verify forward "
                                                  "(1 .. k + 1; plain decoding: 1)"),
    Metric("draft_time_pct", None, "share of decode time (after the first token) in the draft"),
    Metric("verify_time_pct", None, "share of decode time in the target's verify forwards, "
                                    "acceptance and cache rollback"),
)


class Drafter(Protocol):
    """Proposes tokens for the target to verify. One drafter serves one sequence at a time."""

    def begin(self, prompt: list[int], max_len: int) -> None:
        """A new request: forget the previous one. `max_len`: the most tokens a context will
        hold (for a draft that allocates its cache up front)."""
        ...

    def propose(self, context: list[int], k: int) -> list[int]:
        """Up to k tokens to follow `context` (prompt + tokens generated so far). The context
        also tells a stateful drafter what the target accepted: it resyncs to it (e.g. crops
        its own cache to the common prefix) before drafting."""
        ...


def verify(engine: Engine, cache: Any, length: int, last: int,
           drafts: list[int]) -> tuple[list[int], Any]:
    """One target forward over [last, *drafts] on top of `length` cached slots.

    Returns the new tokens (the accepted drafts, then the target's own next token: 1 to
    len(drafts) + 1 of them) and the cache, holding exactly length + 1 + accepted slots.
    """
    device = engine.settings.device
    t = 1 + len(drafts)
    ids = torch.tensor([[last, *drafts]], dtype=torch.long, device=device)  # [1, T]
    pos = torch.arange(length, length + t, device=device)[None]  # [1, T]
    logits = engine.step(StepInput(ids, pos, None, cache, t))  # [1, T, V]
    # greedy[i]: the target's next token after the i-th fed token (one host sync per round).
    greedy = logits[0].argmax(dim=-1).tolist()
    accepted = 0
    while accepted < len(drafts) and drafts[accepted] == greedy[accepted]:
        accepted += 1
    if accepted < len(drafts):  # drop the rejected drafts' keys/values
        cache = engine.crop(cache, length + 1 + accepted)
    return greedy[:accepted + 1], cache


def speculative_generate(engine: Engine, prompts: torch.Tensor, new_tokens: int, clock: Clock,
                         drafter: Drafter, k: int) -> BatchRun:
    """Exactly new_tokens greedy tokens of the target for prompts [1, P], drafted by `drafter`
    k at a time. Tokens accepted in one verify are ready together: they share a stamp.
    Counts go to engine.settings.counters (drafted, accepted, target forwards, seconds)."""
    if prompts.shape[0] != 1:
        raise ValueError(f"speculative decoding serves batch 1, got {prompts.shape[0]} prompts")
    counters = engine.settings.counters
    prompt = prompts[0].tolist()
    p = len(prompt)
    device = engine.settings.device
    clock.start()
    # The verify of the last round never needs more: it feeds at most the tokens still missing
    # (drafts are capped below), so the cache ends at p + new_tokens - 1 slots.
    cache = engine.new_cache(1, p + new_tokens)
    logits = engine.step(StepInput(prompts.to(device), torch.arange(p, device=device)[None],
                                   None, cache, 1))  # [1, 1, V]
    tokens = [int(logits[0, -1].argmax())]
    clock.stamp()  # TTFT: after the target's prefill
    decode_t0 = time.perf_counter()
    draft_s = verify_s = 0.0
    drafted = accepted = forwards = 0
    drafter.begin(prompt, p + new_tokens)
    length = p  # slots in the target's cache; tokens[-1] is not cached yet
    while len(tokens) < new_tokens:
        t0 = time.perf_counter()
        # Never draft past the end: a verify of d drafts yields up to d + 1 tokens.
        want = min(k, new_tokens - len(tokens) - 1)
        drafts = drafter.propose(prompt + tokens, want)[:want] if want > 0 else []
        t1 = time.perf_counter()
        new, cache = verify(engine, cache, length, tokens[-1], drafts)
        t2 = time.perf_counter()
        for _ in new:
            clock.stamp()
        length += len(new)
        tokens += new
        draft_s += t1 - t0
        verify_s += t2 - t1
        drafted += len(drafts)
        accepted += len(new) - 1
        forwards += 1
    decode_s = time.perf_counter() - decode_t0
    stamps = clock.finish()
    for key, value in (("drafted", drafted), ("accepted", accepted), ("target_forwards", forwards),
                       ("draft_s", draft_s), ("verify_s", verify_s), ("decode_s", decode_s)):
        counters[f"spec_{key}"] = counters.get(f"spec_{key}", 0) + value
    return BatchRun(stamps_s=stamps, tokens=torch.tensor([tokens], dtype=torch.long))


def derive_metrics(counters: dict[str, float]) -> dict[str, float]:
    """The declared METRICS columns from the running counts (absent when undefined)."""
    out: dict[str, float] = {}
    drafted, accepted = counters.get("spec_drafted", 0), counters.get("spec_accepted", 0)
    forwards, decode_s = counters.get("spec_target_forwards", 0), counters.get("spec_decode_s", 0)
    if drafted:
        out["acceptance_rate_pct"] = 100.0 * accepted / drafted
    if forwards:
        out["tokens_per_target_forward"] = (accepted + forwards) / forwards
    if decode_s:
        out["draft_time_pct"] = 100.0 * counters.get("spec_draft_s", 0) / decode_s
        out["verify_time_pct"] = 100.0 * counters.get("spec_verify_s", 0) / decode_s
    return out


def speculative_decoder(make_drafter: Callable[[Engine], Drafter], k: int) -> Callable[
        [Engine, torch.Tensor, int, Clock], BatchRun]:
    """A `Settings.decoder`: speculative decoding with the drafter `make_drafter(target)`,
    built on first use for each target engine (outside the timed region: a draft model's load
    is not a request's cost)."""
    drafters: weakref.WeakKeyDictionary[Engine, Drafter] = weakref.WeakKeyDictionary()

    def decode(engine: Engine, prompts: torch.Tensor, new_tokens: int, clock: Clock) -> BatchRun:
        drafter = drafters.get(engine)
        if drafter is None:
            drafter = drafters[engine] = make_drafter(engine)
        run = speculative_generate(engine, prompts, new_tokens, clock, drafter, k)
        metrics = engine.settings.metrics
        for m in METRICS:  # none left over from the warm-up (counters were cleared since)
            metrics.pop(m.name, None)
        metrics.update(derive_metrics(engine.settings.counters))
        return run

    return decode


class ModelDrafter:
    """A draft model behind the step API (a small model, or the target's first layers): greedy,
    one token per step, with its own KV cache that follows the accepted context."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cache: Any = None
        self.held: list[int] = []  # the tokens whose keys/values the draft's cache holds

    def begin(self, prompt: list[int], max_len: int) -> None:
        # The draft never holds more than the context plus its drafts but one; speculative_generate
        # caps drafts so that this stays under max_len.
        self.cache = self.engine.new_cache(1, max_len)
        self.held = []

    def propose(self, context: list[int], k: int) -> list[int]:
        # Resync: keep the cached prefix the target accepted (at least the last context token
        # must be fed again, to get the logits that follow it); the first call feeds the prompt.
        keep = 0
        limit = min(len(self.held), len(context) - 1)
        while keep < limit and self.held[keep] == context[keep]:
            keep += 1
        if keep < len(self.held):
            self.cache = self.engine.crop(self.cache, keep)
            del self.held[keep:]
        device = self.engine.settings.device
        feed = context[keep:]
        out: list[int] = []
        for _ in range(k):
            n = len(self.held)
            ids = torch.tensor([feed], dtype=torch.long, device=device)  # [1, T]
            pos = torch.arange(n, n + len(feed), device=device)[None]  # [1, T]
            logits = self.engine.step(StepInput(ids, pos, None, self.cache, 1))  # [1, 1, V]
            self.held += feed
            out.append(int(logits[0, -1].argmax()))
            feed = out[-1:]
        return out
