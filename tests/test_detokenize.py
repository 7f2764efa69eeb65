"""The own server's incremental detokenizer: its deltas joined are the full decode."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infer_opt.workloads.online.detokenize import Detokenizer


def _stream(tokenizer: object, ids: list[int]) -> str:
    d = Detokenizer(tokenizer)
    return "".join(d.add(i) for i in ids) + d.flush()


def test_no_tokenizer_gives_ids_in_angle_brackets() -> None:
    d = Detokenizer(None)
    assert [d.add(5), d.add(17)] == ["<5>", "<17>"]
    assert d.flush() == ""


@pytest.fixture(scope="module")
def tokenizer() -> object:
    from infer_opt.core.models import load_tokenizer, resolve

    try:
        return load_tokenizer(resolve("smollm2-135m"))
    except Exception as exc:  # the embedded model's tokenizer ships with the package
        pytest.skip(f"default tokenizer not available: {exc}")


def test_text_round_trips(tokenizer: object) -> None:
    text = "Grüße, 世界! The KV cache grows with context × batch 🙂 ünïcödé."
    ids = tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
    d = Detokenizer(tokenizer)
    deltas = [d.add(i) for i in ids]
    assert "".join(deltas) + d.flush() == text
    assert "\ufffd" not in "".join(deltas)  # half characters are held back, not sent


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=49151), min_size=1, max_size=40))
def test_any_ids_join_to_the_full_decode(tokenizer: object, ids: list[int]) -> None:
    full = tokenizer.decode(ids, skip_special_tokens=False)  # type: ignore[attr-defined]
    assert _stream(tokenizer, ids) == full
