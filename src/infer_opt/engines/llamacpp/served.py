"""What llama-cpp-python's OpenAI server (0.3.36) needs to answer like the suite's decode loop:
greedy, and exactly `max_tokens` tokens per request.

- Greedy: its `repeat_penalty` defaults to 1.1 and applies even at temperature 0: send 1.0.
- Fixed length: it ignores `ignore_eos`, and it stops at any end-of-generation token
  (`llama_vocab_is_eog`: for SmolLM2's GGUF ids 0 <|endoftext|>, 2 <|im_end|>, 4 <reponame>),
  while its `min_tokens` bans only `token_eos()` (2). So every end-of-generation id is banned
  with `logit_bias`, read from the GGUF by llama.cpp itself (a vocab-only load in the server's
  environment), and `min_tokens` is sent as 0: with both set, its `_create_completion` replaces
  its logits processors by `list.extend`'s None and neither applies (checked against the real
  server: a prompt that stops after 8 tokens stops after 8 with both, and runs to max_tokens
  with either alone).
- Requests wait their turn: the server's `interrupt_requests` (default on) ends a streaming
  request with `[DONE]` as soon as another one waits for the model, which cut most requests of
  an online run to one token; the launcher turns it off (engines/http/launch.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

# A logit this low is never the argmax: the banned ids cannot be generated. (JSON has no
# -infinity; OpenAI's documented range stops at -100, which llama-cpp-python does not enforce.)
BANNED_LOGIT = -1e9

# Run by the server's own Python: llama.cpp's end-of-generation ids of a GGUF, as JSON.
_EOG_PROBE = """
import json, sys
import llama_cpp
llm = llama_cpp.Llama(sys.argv[1], vocab_only=True, verbose=False)
vocab = llama_cpp.llama_model_get_vocab(llm.model)
print(json.dumps([i for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)]))
"""


def eog_token_ids(python: Path, gguf: Path, timeout_s: float = 120.0) -> list[int]:
    """The token ids llama.cpp ends generation at for `gguf` (read by `python`, the server's
    environment, without loading the weights)."""
    proc = subprocess.run([str(python), "-c", _EOG_PROBE, str(gguf)], capture_output=True,
                          text=True, timeout=timeout_s)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"could not read the end-of-generation ids of {gguf} with {python} "
                           f"(exit {proc.returncode}): {tail}")
    ids = json.loads(lines[-1])
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise RuntimeError(f"end-of-generation ids of {gguf}: unexpected answer {lines[-1]!r}")
    return ids


def request_fields(eog_ids: list[int]) -> dict[str, Any]:
    """Fields added to every request body (module docstring): greedy, fixed length."""
    return {"repeat_penalty": 1.0, "min_tokens": 0,
            "logit_bias": {str(i): BANNED_LOGIT for i in eog_ids}}


def note(eog_ids: list[int]) -> str:
    """How the row's fixed length was obtained (the row's notes)."""
    return (f"fixed length on llama.cpp's server: its end-of-generation ids "
            f"{', '.join(map(str, eog_ids))} banned with logit_bias (it ignores ignore_eos; "
            "min_tokens sent as 0, which with logit_bias would disable both), "
            "interrupt_requests off")
