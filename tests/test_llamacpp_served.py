"""llama.cpp's server answers with exactly max_tokens tokens (engines/llamacpp/served.py): every
end-of-generation id banned with logit_bias (min_tokens sent as 0, since llama-cpp-python drops
both when both are set), and requests queue instead of interrupting each other. The server
tests run where .venv-llamacpp exists (make setup-llamacpp) and are skipped, with the reason,
elsewhere."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from infer_opt.engines.base import environment_python, environment_reason
from infer_opt.engines.http.client import request_body
from infer_opt.engines.llamacpp.served import BANNED_LOGIT, request_fields

from .conftest import write_suite

WHY_NOT = environment_reason("llamacpp", ".venv-llamacpp", ("llama_cpp", "uvicorn", "fastapi"))
needs_server = pytest.mark.skipif(WHY_NOT is not None, reason=f"llama.cpp's server: {WHY_NOT}")


def test_the_request_bans_end_of_generation_and_sends_no_min_tokens() -> None:
    body = request_body([1, 2, 3], 8, "m", False, request_fields([0, 2, 4]))
    assert body["min_tokens"] == 0 and body["repeat_penalty"] == 1.0
    assert body["logit_bias"] == {"0": BANNED_LOGIT, "2": BANNED_LOGIT, "4": BANNED_LOGIT}
    assert json.loads(json.dumps(body)) == body  # plain JSON: no infinity


def _default_gguf() -> Path:
    from infer_opt.core.models import resolve
    from infer_opt.engines.llamacpp.engine import find_gguf

    gguf = find_gguf(resolve("smollm2-135m"))
    assert gguf is not None and gguf.is_file()
    return gguf


@needs_server
def test_end_of_generation_ids_and_a_prompt_that_stops_early() -> None:
    from infer_opt.engines.http import launch
    from infer_opt.engines.http.client import Job, run_jobs
    from infer_opt.engines.llamacpp.served import eog_token_ids

    python = environment_python("llamacpp", ".venv-llamacpp")
    assert python is not None
    gguf = _default_gguf()
    eog = eog_token_ids(python, gguf)
    assert eog == [0, 2, 4]  # <|endoftext|>, <|im_end|> (token_eos), <reponame>
    # The Instruct model answers this in a few tokens and ends its turn.
    prompt = ("<|im_start|>user\nAnswer with one word: what colour is the sky?<|im_end|>\n"
              "<|im_start|>assistant\n")
    server = launch.llamacpp_server(python, gguf, "m", 1, 2048)
    server.start(180)
    try:
        def ask(extra: dict[str, object]) -> tuple[str | None, int]:
            [c] = asyncio.run(run_jobs(server.base_url, [Job(0, prompt, 24)], "m",
                                       extra=extra, timeout_s=120))
            assert c.error is None, c.error
            return c.finish_reason, len(c.chunk_s)

        assert ask({"repeat_penalty": 1.0, "min_tokens": 0}) [0] == "stop"
        # min_tokens (what the client sends) with logit_bias: llama-cpp-python applies neither.
        both = {**request_fields(eog), "min_tokens": 24}
        assert ask(both)[0] == "stop"
        assert ask(request_fields(eog)) == ("length", 24)
    finally:
        server.stop()


SUITE = """
model = "smollm2-135m"
device = "cpu"
threads = 1
timeout_s = 600
[[group]]
name = "load"
workload = "online"
variants = ["served[server=llamacpp]"]
policies = ["continuous"]
arrival = "concurrency"
concurrencies = [3]
num_requests = 6
prompt_tokens = 16
new_tokens = 12
warmup_requests = 1
min_repeats = 1
max_repeats = 1
"""


@needs_server
def test_served_llamacpp_rows_are_full_length(tmp_path: Path) -> None:
    from infer_opt.run.runner import run_suite
    from infer_opt.run.suite import load_suite

    suite = load_suite(str(write_suite(tmp_path / "s.toml", SUITE)))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    [row] = list(csv.DictReader(open(csv_path, newline="")))
    assert row["status"] == "ok", row["reason"]
    assert float(row["short_requests"]) == 0 and float(row["errors"]) == 0
    assert "end-of-generation ids 0, 2, 4 banned with logit_bias" in row["notes"]
    [s] = [json.loads(x) for x in
           csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()]
    assert [len(r["stamps_s"]) for r in s["requests"]] == [12] * 6
