"""Streamed text from a growing list of token ids, at a cost that does not grow with it.

Decoding the whole output again for every new token (and sending the new tail) costs O(n) per
token, O(n^2) per request: 120 us per token at 250 tokens on the server's event loop here, the
thread that also has to hand the GIL back to the decode loop. Instead (the scheme of TGI's and
vLLM's incremental detokenizers) each step decodes a short window: the ids from `prefix`
(where the last emitted text started) to the end, minus the text of ids[prefix:read] already
sent. A window ending in U+FFFD is an incomplete UTF-8 sequence (a byte-level BPE token can
carry half a character): nothing is emitted until a later token completes it.
"""

from __future__ import annotations

from typing import Any


class Detokenizer:
    """`add(token) -> text delta`; the deltas joined equal the decode of all ids (byte-level
    BPE tokenizers), except a trailing incomplete character, which `flush` returns."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] is the window's already-sent left context
        self.read = 0

    def _decode(self, ids: list[int]) -> str:
        if self.tokenizer is None:  # the tiny test model has no tokenizer: "<id>" per token
            return "".join(f"<{i}>" for i in ids)
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    def add(self, token: int) -> str:
        self.ids.append(int(token))
        sent = self._decode(self.ids[self.prefix:self.read])
        text = self._decode(self.ids[self.prefix:])
        if len(text) <= len(sent) or text.endswith("\ufffd"):
            return ""  # no complete new character yet
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(sent):]

    def flush(self) -> str:
        """What is left when the stream ends (an incomplete character, as U+FFFD)."""
        sent = self._decode(self.ids[self.prefix:self.read])
        text = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return text[len(sent):] if len(text) > len(sent) else ""
