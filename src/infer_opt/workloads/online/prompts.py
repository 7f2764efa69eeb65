"""Request prompts: windows of the project's English text, or a shared system prompt followed
by distinct questions (data/shared_prefix.txt). Without a tokenizer (tiny random model):
seeded random token ids of the same shapes."""

from __future__ import annotations

import random
from importlib.resources import files

from infer_opt.core.prompts import text_token_stream


def shared_prefix_text() -> tuple[str, list[str]]:
    """(system prompt, questions) from data/shared_prefix.txt: the prompt, a line '---', one
    question per line."""
    raw = files("infer_opt").joinpath("data/shared_prefix.txt").read_text(encoding="utf-8")
    system, _, rest = raw.partition("\n---\n")
    questions = [q.strip() for q in rest.splitlines() if q.strip()]
    return system.strip() + "\n\n", questions


def _cycle(stream: list[int], start: int, n: int) -> list[int]:
    return [stream[(start + i) % len(stream)] for i in range(n)]


def text_prompts(lengths: list[int], vocab_size: int, tokenizer: object | None, seed: int
                 ) -> list[list[int]]:
    """Request i: lengths[i] tokens; distinct windows of the text (or random ids)."""
    if tokenizer is None:
        rng = random.Random(f"prompts-{seed}")
        return [[rng.randrange(3, vocab_size) for _ in range(n)] for n in lengths]
    stream = text_token_stream(tokenizer)
    return [_cycle(stream, 97 * i + seed, n) for i, n in enumerate(lengths)]


def shared_prefix_prompts(prefix_tokens: int, lengths: list[int], vocab_size: int,
                          tokenizer: object | None, seed: int) -> tuple[list[int], list[list[int]]]:
    """(prefix of exactly prefix_tokens ids, each request's own part of lengths[i] ids).

    With a tokenizer: the system prompt (repeated if shorter), then request i's questions
    starting at question i, cut to its length, so every request differs right after the prefix.
    """
    if tokenizer is None:
        rng = random.Random(f"prefix-{seed}")
        prefix = [rng.randrange(3, vocab_size) for _ in range(prefix_tokens)]
        own = [[rng.randrange(3, vocab_size) for _ in range(n)] for n in lengths]
        return prefix, own
    system, questions = shared_prefix_text()

    def enc(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]

    prefix = _cycle(enc(system), 0, prefix_tokens)
    qs = [enc(f"Question: {q}\n") for q in questions]
    own = []
    for i, n in enumerate(lengths):
        ids: list[int] = []
        j = i
        while len(ids) < n:
            ids += qs[j % len(qs)]
            j += 1
        own.append(ids[:n])
    return prefix, own
