"""The text that pruning scores and distillation learn from: CPython's own documentation.

`pydoc_data.topics` ships with CPython (it is what `help("for")` prints): 79 topics, about
465 KB of English prose and code in Python 3.11. It is on every machine that runs the suite,
so nothing is downloaded at run time.

Never the evaluation text (data/eval_text.txt): perplexity and fidelity are measured on it, and a
model pruned or trained on it would be scored on text it has seen.

Models with a tokenizer read the corpus through it. Models without one (the tiny random test
model) read it as bytes, id = byte + 3 (the tiny config keeps ids 0-2 for pad/bos/eos), so the
tests exercise the same text and the same code path.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from infer_opt.core.errors import UserError

BYTE_OFFSET = 3  # ids 0..2 are special tokens in the tiny config
VAL_EVERY = 20  # every 20th chunk is held out for validation (5 %)
CALIBRATION_SEQS = 16  # chunks for importance scores (16 x 256 = 4096 tokens)
CALIBRATION_LEN = 256


def documents() -> list[str]:
    """The corpus, one string per pydoc topic, in sorted topic order (stable across runs)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it from a minimal Python
        raise UserError("corpus", "the stdlib module pydoc_data.topics is missing from this "
                                  "Python; install the full standard library") from None
    return [topics[k] for k in sorted(topics)]


def digest() -> str:
    """Identity of the corpus text (it changes with the Python version), for cache keys."""
    h = hashlib.sha256()
    for doc in documents():
        h.update(doc.encode())
        h.update(b"\0")
    return "pydoc_data.topics:" + h.hexdigest()[:16]


def token_stream(tokenizer: Any | None, vocab_size: int) -> torch.Tensor:
    """The whole corpus as one id stream [T] int64, documents separated by an EOS id."""
    ids: list[int] = []
    if tokenizer is not None:
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        for doc in documents():
            ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [eos]
    else:
        if vocab_size < 256 + BYTE_OFFSET:
            raise UserError("corpus", f"a model without tokenizer needs vocab_size >= "
                                      f"{256 + BYTE_OFFSET} to read bytes, got {vocab_size}")
        for doc in documents():
            ids += [b + BYTE_OFFSET for b in doc.encode()] + [2]
    return torch.tensor(ids, dtype=torch.long)


def chunks(stream: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train [N, seq_len], val [M, seq_len]): consecutive chunks, every VAL_EVERY-th held out.

    Chunks cut across document boundaries (the EOS between them stays in); the tail shorter
    than seq_len is dropped.
    """
    n = stream.numel() // seq_len
    if n < VAL_EVERY:
        raise UserError("seq-len", f"the corpus gives only {n} chunks of {seq_len} tokens; "
                                   f"need >= {VAL_EVERY} (use a shorter --seq-len)")
    all_chunks = stream[: n * seq_len].view(n, seq_len)
    is_val = torch.arange(n) % VAL_EVERY == VAL_EVERY - 1
    return all_chunks[~is_val], all_chunks[is_val]


def tokenizer_for(model: Any) -> Any | None:
    """The tokenizer saved beside a loaded model (`config._name_or_path`), or None."""
    from pathlib import Path

    path = Path(getattr(model.config, "_name_or_path", "") or "")
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def calibration_ids(model: Any, n_seqs: int = CALIBRATION_SEQS,
                    seq_len: int = CALIBRATION_LEN) -> torch.Tensor:
    """[n_seqs, seq_len] training-split chunks for importance scores (plugin-facing).

    A transform `(model, settings) -> model` has only the model: the tokenizer is found beside
    its weights. Deterministic: n_seqs training chunks evenly spread over the corpus (the topics
    are sorted by name, so the first chunks alone would all be about `assert`/assignment).
    """
    stream = token_stream(tokenizer_for(model), int(model.config.vocab_size))
    train, _ = chunks(stream, seq_len)
    n = min(n_seqs, train.shape[0])
    return train[torch.linspace(0, train.shape[0] - 1, n).round().long()]


def run_calibration(model: Any, ids: torch.Tensor, batch: int, hooks: list[Any]) -> None:
    """Run the decoder (no lm_head, no cache) over calibration ids [N, S] in batches, so that
    `hooks` (already registered) record what they measure; then remove them."""
    try:
        with torch.inference_mode():
            for start in range(0, ids.shape[0], batch):
                model.model(input_ids=ids[start:start + batch], use_cache=False)
    finally:
        for h in hooks:
            h.remove()
