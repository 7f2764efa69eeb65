"""Speculative decoding drafted by prompt lookup: no draft model at all.

The draft is the continuation of the longest n-gram (n = `ngram` down to `min_ngram`) that
ends the context and also occurs earlier in it (prompt + tokens so far): where the answer
quotes or repeats its input (summaries, code edits, extraction), or itself (a small model's
greedy answer often loops), the tokens that followed last time are a good guess. Saxena,
"Prompt Lookup Decoding" (2023); transformers' `prompt_lookup_num_tokens`. Drafting costs a
scan of the context in Python, no forward; a context with no match drafts nothing, and the
round is a plain one-token decode step.
"""

from __future__ import annotations

from typing import Any, ClassVar

from infer_opt.core.errors import UserError
from infer_opt.core.params import Param
from infer_opt.engines.base import Engine
from infer_opt.plugins.speculative.base import K, Speculative
from infer_opt.plugins.speculative.decoding import Drafter


class PromptLookup:
    """The Drafter: stateless, the context is all it reads."""

    def __init__(self, ngram: int, min_ngram: int = 1) -> None:
        self.ngram, self.min_ngram = ngram, min_ngram

    def begin(self, prompt: list[int], max_len: int) -> None:
        pass

    def propose(self, context: list[int], k: int) -> list[int]:
        for n in range(min(self.ngram, len(context) - 1), self.min_ngram - 1, -1):
            suffix = context[-n:]
            # The most recent earlier occurrence (start i < len - n): recent text predicts what
            # comes next better than the prompt's first lines.
            for i in range(len(context) - n - 1, -1, -1):
                if context[i:i + n] == suffix:
                    # Copy what followed it; where the copy reaches the end of the context it
                    # goes on with its own output (period len - i - n), so a loop "a b a b"
                    # drafts "a b a b", not just the two tokens left.
                    start, period = i + n, len(context) - i - n
                    out: list[int] = []
                    for t in range(k):
                        out.append(context[start + t] if t < period else out[t - period])
                    return out
        return []


class SpecLookup(Speculative):
    name = "spec-lookup"
    summary = "speculative decoding, drafts copied from the context by n-gram lookup (no model)"
    # Only the step API is used: any engine with one serves it.
    engines = ("torch", "ort", "ort-genai")
    params: ClassVar[tuple[Param, ...]] = (
        K, Param("ngram", int, 3, "longest suffix n-gram looked up", minimum=1, maximum=8),
        Param("min_ngram", int, 1, "shortest one (2: no drafts from a single-token match, "
                                   "most of them wrong on prose)", minimum=1, maximum=8))

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if self.values["min_ngram"] > self.values["ngram"]:
            raise UserError(f"variant {self.name}", f"min_ngram={self.values['min_ngram']} is "
                                                    f"above ngram={self.values['ngram']}")

    def make_drafter(self, target: Engine) -> Drafter:
        return PromptLookup(self.values["ngram"], self.values["min_ngram"])
