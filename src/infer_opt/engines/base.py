"""What every backend provides, and the one timed generation loop that stepwise backends share."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from infer_opt.core.timing import Clock


@dataclass
class BatchRun:
    """One timed run of a static batch.

    stamps_s[0] is when the first token of every request was ready (TTFT); stamps_s[i] when
    token i was ready. tokens is [batch, new_tokens] int64 on the CPU.
    """

    stamps_s: list[float]
    tokens: torch.Tensor

    @property
    def ttft_s(self) -> float:
        return self.stamps_s[0]

    @property
    def e2e_s(self) -> float:
        return self.stamps_s[-1]

    @property
    def itl_s(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps_s, self.stamps_s[1:])]


@dataclass
class ModelFacts:
    """Sizes a row reports and the roofline needs."""

    weight_bytes: int
    kv_bytes_per_token: int  # per sequence, all layers, K and V; 0 when nothing is cached
    load_s: float
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    facts: ModelFacts

    def run_batch(self, prompts: torch.Tensor, new_tokens: int, clock: Clock) -> BatchRun:
        """Greedy-generate exactly new_tokens for prompts [B, P]; time with clock."""
        ...

    def context(self) -> AbstractContextManager[Any]:
        """Entered around all timed runs (inference mode, forced kernels, ...)."""
        ...

    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-token logits: ids [B, T] -> float32 CPU logits [B, T, V].

        Untimed; used for fidelity against the baseline on identical token sequences.
        """
        ...


class StepSession(Protocol):
    """A backend that exposes prefill and single-token decode steps."""

    def begin(self, batch_size: int, max_len: int) -> None:
        """Allocate per-request state (caches) before the clock starts."""
        ...

    def prefill(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts [B, P] -> next-token logits [B, V]."""
        ...

    def decode(self, next_ids: torch.Tensor) -> torch.Tensor:
        """next_ids [B, 1] -> next-token logits [B, V]."""
        ...


def stepwise_generate(session: StepSession, prompts: torch.Tensor, new_tokens: int,
                      clock: Clock) -> BatchRun:
    """Prefill, then one decode step per token; a stamp as each token becomes available.

    Greedy argmax stays on the device, so no host sync happens inside the loop except the
    clock's own. No early stop at EOS: every variant does the same work.
    """
    batch, prompt_len = prompts.shape
    session.begin(batch, prompt_len + new_tokens)
    out: list[torch.Tensor] = []
    clock.start()
    logits = session.prefill(prompts)  # [B, V]
    next_ids = logits.argmax(dim=-1, keepdim=True)  # [B, 1]
    clock.stamp()
    out.append(next_ids)
    for _ in range(new_tokens - 1):
        logits = session.decode(next_ids)
        next_ids = logits.argmax(dim=-1, keepdim=True)
        clock.stamp()
        out.append(next_ids)
    stamps = clock.finish()
    return BatchRun(stamps_s=stamps, tokens=torch.cat(out, dim=1).cpu())


def no_context() -> AbstractContextManager[Any]:
    return nullcontext()
