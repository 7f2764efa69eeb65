"""How long two greedy generations stay identical: the one definition shared by fidelity
(run/fidelity.py, measured against the fp32 baseline) and the tables (results/, from the
tokens kept in the samples file)."""

from __future__ import annotations

from collections.abc import Sequence


def greedy_match(tokens: Sequence[Sequence[int]], ref_tokens: Sequence[Sequence[int]]) -> int:
    """Identical tokens before the first difference, min over the prompts both sides have.
    tokens, ref_tokens: [prompts][tokens] (lists, or a tensor's .tolist())."""
    shared = min(len(tokens), len(ref_tokens))
    best: int | None = None
    for a, b in zip(tokens[:shared], ref_tokens[:shared]):
        same = 0
        for x, y in zip(a, b):
            if x != y:
                break
            same += 1
        best = same if best is None else min(best, same)
    return best or 0
