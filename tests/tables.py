"""Markdown tables are aligned by tabulate (results/markdown.py): tests match cells on the text
with the alignment padding squeezed out, so `| a | b |` finds a row however wide its columns."""

from __future__ import annotations

import re


def flat(text: str) -> str:
    """Runs of spaces to one, and separator lines to '|---|---|'."""
    text = re.sub(r"\|-+(?=\|)", "|---", text)
    return re.sub(r" {2,}", " ", text)
