"""The streaming client against scripted SSE servers on 127.0.0.1: token counting, chunk
rules and errors (engines/http/client.py). Every request is bounded by a timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("httpcore")

from infer_opt.engines.http.client import Completion, Job, count_tokens, run_jobs  # noqa: E402
from tests.http_fixtures import data, finish, scripted_server, text_chunk  # noqa: E402


def one(script: list[Any], chat: bool = False, encode: Any = None,
        timeout_s: float = 20.0, max_tokens: int = 4) -> Completion:
    with scripted_server(script) as srv:
        out = asyncio.run(run_jobs(srv["url"], [Job(0, [1, 2, 3], max_tokens)], "m",
                                   chat=chat, encode=encode, timeout_s=timeout_s))
        assert srv["bodies"][0]["stream_options"]["include_usage"] is True
    return out[0]


def usage(n: int) -> dict[str, int]:
    return {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}


def test_per_chunk_usage_counts_a_multi_token_chunk_as_k_tokens() -> None:
    script = [data({"choices": [{"index": 0, "text": "a", "finish_reason": None}],
                    "usage": usage(1)}),
              data({"choices": [{"index": 0, "text": "bcd", "finish_reason": None}],
                    "usage": usage(4)}),
              *finish(usage(4))]
    c = one(script)
    assert c.error is None
    assert c.token_count_source == "usage"
    assert c.chunk_tokens == [1, 3]
    assert c.tokens == 4 and not c.short
    stamps = c.stamps_s
    assert len(stamps) == 4 and stamps[1] == stamps[2] == stamps[3]  # one chunk, three tokens


def test_token_ids_without_usage() -> None:
    c = one([text_chunk("x", token_ids=[7]), text_chunk("yz", token_ids=[8, 9]),
             *finish(None)], max_tokens=3)
    assert c.error is None and c.token_count_source == "token_ids"
    assert c.token_ids == [7, 8, 9] and c.chunk_tokens == [1, 2]


def test_tokenizer_counts_when_no_usage_and_no_ids() -> None:
    def encode(text: str) -> list[int]:
        return [0] * len(text.split())

    c = one([text_chunk("one"), text_chunk(" two three"), text_chunk(" four"), *finish(None)],
            encode=encode)
    assert c.error is None and c.token_count_source == "tokenizer"
    assert c.chunk_tokens == [1, 2, 1]


def test_final_usage_total_wins_over_the_tokenizer() -> None:
    def encode(text: str) -> list[int]:
        return [0] * len(text.split())

    c = one([text_chunk("one"), text_chunk(" two"), *finish(usage(5))], encode=encode,
            max_tokens=5)
    assert c.tokens == 5 and c.chunk_tokens == [1, 4]


def test_one_token_per_chunk_without_usage_or_tokenizer_is_marked() -> None:
    c = one([text_chunk("a"), text_chunk("b"), *finish(None)], max_tokens=4)
    assert c.token_count_source == "chunks"
    assert c.tokens == 2 and c.short  # asked for 4: the server stopped early


def test_role_only_and_empty_chunks_are_not_tokens() -> None:
    role = data({"choices": [{"index": 0, "delta": {"role": "assistant"},
                              "finish_reason": None}]})
    empty = data({"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": None}]})
    content = data({"choices": [{"index": 0, "delta": {"content": "hi"},
                                 "finish_reason": None}], "usage": usage(1)})
    done = data({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                 "usage": usage(1)})
    with scripted_server([role, ("sleep", 0.2), empty, content, done,
                          data("[DONE]")]) as srv:
        c = asyncio.run(run_jobs(srv["url"], [Job(0, "hello", 1)], "m", chat=True,
                                 timeout_s=20))[0]
        assert "messages" in srv["bodies"][0]
    assert c.error is None and c.tokens == 1 and len(c.chunk_s) == 1
    # TTFT is the content chunk, which came after the 0.2 s pause, not the role chunk.
    assert c.stamps_s[0] - c.sent_s >= 0.2


def test_http_500_is_an_error() -> None:
    c = one([("status", 500)])
    assert c.error is not None and c.error.startswith("HTTP 500")


def test_malformed_sse_is_an_error() -> None:
    c = one([text_chunk("a"), ("line", "data: {not json"), *finish(None)])
    assert c.error is not None and "malformed SSE" in c.error


def test_stream_that_stops_early_is_an_error() -> None:
    c = one([text_chunk("a"), ("close",)])
    assert c.error is not None and "ended early" in c.error


def test_timeout_is_an_error() -> None:
    c = one([text_chunk("a"), ("sleep", 3.0), *finish(None)], timeout_s=0.5)
    assert c.error is not None and c.error.startswith("timeout")


def test_count_tokens_never_negative_when_per_chunk_usage_goes_back() -> None:
    c = Completion(sent_s=0.0, chunk_s=[0.1, 0.2, 0.3], chunk_tokens=[0, 0, 0],
                   chunk_text=["a", "b", "c"], usage_per_chunk=[2, 1, 3])
    count_tokens(c, None)
    assert c.chunk_tokens == [2, 0, 1] and c.token_count_source == "usage"


def test_endpoint_engine_sends_the_key_and_never_records_it(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from infer_opt.core.models import resolve
    from infer_opt.core.stack import build_stack
    from infer_opt.core.timing import HostClock

    monkeypatch.setenv("INFER_OPT_TEST_KEY", "sk-secret-123")
    script = [data({"choices": [{"index": 0, "text": "a", "token_ids": [5],
                                 "finish_reason": None}]}),
              data({"choices": [{"index": 0, "text": "b", "token_ids": [6],
                                 "finish_reason": None}]}), *finish(usage(2))]
    with scripted_server(script) as srv:
        variant = (f"served[server=endpoint,endpoint={srv['url']},model_name=m,"
                   "api_key_env=INFER_OPT_TEST_KEY]")
        stack = build_stack(variant, "cpu")
        assert stack.unavailable is None
        engine = stack.engine(resolve("tiny-random"), stack.settings)
        try:
            import torch

            run = engine.generate(torch.tensor([[1, 2, 3]]), 2, HostClock())
        finally:
            engine.close()
        assert srv["auth"][-1] == "Bearer sk-secret-123"
        assert srv["bodies"][-1]["model"] == "m" and srv["bodies"][-1]["prompt"] == [1, 2, 3]
    assert run.tokens.tolist() == [[5, 6]] and len(run.stamps_s) == 2
    recorded = repr(stack.settings.notes) + repr(stack.settings.metrics) + repr(
        stack.settings.options)
    assert "sk-secret-123" not in recorded


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_refused_is_a_one_line_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    c = asyncio.run(run_jobs(url, [Job(0, [1], 2)], "m", timeout_s=10))[0]
    assert c.error is not None and c.error.startswith("ConnectError") and "\n" not in c.error


def test_control_requests_raise_client_error_without_an_answer() -> None:
    from infer_opt.engines.http.client import ClientError, new_client

    async def go() -> None:
        async with new_client(timeout_s=10) as pool:
            await pool.get(f"http://127.0.0.1:{free_port()}/metrics")

    with pytest.raises(ClientError, match="ConnectError"):
        asyncio.run(go())
