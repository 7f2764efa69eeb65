"""Deterministic prompts of an exact token length.

With a tokenizer, prompts are windows of data/eval_text.txt (written for this project), so the
default model sees natural English. Without one (tiny random model), seeded random token ids.
"""

from __future__ import annotations

from importlib.resources import files

import torch


def eval_text() -> str:
    return files("infer_opt").joinpath("data/eval_text.txt").read_text(encoding="utf-8")


def text_token_stream(tokenizer: object) -> list[int]:
    ids: list[int] = tokenizer(eval_text(), add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    return ids


def prompt_batch(batch_size: int, prompt_tokens: int, vocab_size: int,
                 tokenizer: object | None = None, seed: int = 0) -> torch.Tensor:
    """[batch_size, prompt_tokens] int64; row i differs from row j (distinct requests)."""
    if tokenizer is None:
        g = torch.Generator().manual_seed(seed)
        # Skip the lowest ids, which tiny configs use for special tokens.
        return torch.randint(3, vocab_size, (batch_size, prompt_tokens), generator=g)
    stream = text_token_stream(tokenizer)
    need = prompt_tokens + batch_size * 97
    while len(stream) < need:  # long prompts wrap around the text
        stream = stream + stream
    # Row i starts 97 tokens after row i-1: distinct, deterministic, no padding needed.
    rows = [stream[i * 97 : i * 97 + prompt_tokens] for i in range(batch_size)]
    return torch.tensor(rows, dtype=torch.long)
