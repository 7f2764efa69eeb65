"""Served variants checked at planning (one line, exit 2, nothing written): the own server's
options, prefix reuse, a suite's endpoint header; the suite's endpoint reaches its
served[server=endpoint] variants (a variant's own options win), and the API key's value is
never written anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from infer_opt.core.errors import UserError
from infer_opt.core.stack import SUITE, build_stack
from infer_opt.engines.http.endpoint import endpoint_problem, env_name_problem

from .conftest import write_suite
from .trust_helpers import assert_refused, cli

SUITE_HEAD = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 300
{header}
[[group]]
name = "load"
workload = "online"
variants = {variants}
policies = ["continuous"]
num_requests = 3
arrival_rates = [50.0]
prompt_tokens = 6
new_tokens = 3
min_repeats = 1
max_repeats = 1
{keys}
"""


def _suite(tmp_path: Path, variants: str, header: str = "", keys: str = "") -> Path:
    return write_suite(tmp_path / "s.toml", SUITE_HEAD.format(variants=variants, header=header,
                                                              keys=keys))


@pytest.mark.parametrize("variants, header, keys, needles", [
    ('["served[server=own,policy=bogus]+kv-cache"]', "", "",
     ("policy must be one of", "continuous", "dynamic", "sequential", "'bogus'")),
    ('["served[server=llamacpp,policy=dynamic]"]', "", "",
     ("policy is an option of the own server", "server=llamacpp")),
    ('["served[server=own]+kv-cache"]', "",
     'prompts = "shared-prefix"\nprefix_tokens = 8\nprefix_reuse = true',
     ("prefix_reuse", "must be false", "served[server=own]+kv-cache")),
    ('["served[server=endpoint,endpoint=ftp://h/v1]"]', "", "",
     ("endpoint must be http(s)://host[:port]/path", "ftp://h/v1")),
    ('["served[server=endpoint]"]', "", "", ("needs endpoint=", "suite's endpoint")),
    ('["served[server=endpoint]"]', 'endpoint = "http://127.0.0.1:99999/v1"', "",
     ("s.toml: endpoint", "http(s)://host[:port]/path")),
    ('["served[server=endpoint]"]', 'endpoint = "http://me:secret@127.0.0.1:8000/v1"', "",
     ("s.toml: endpoint", "must not carry credentials")),
    ('["served[server=endpoint]"]', 'endpoint = "http://127.0.0.1:8000"', "",
     ("s.toml: endpoint", "path")),
    ('["served[server=endpoint]"]',
     'endpoint = "http://127.0.0.1:8000/v1"\napi_key_env = "sk-not-a-name"', "",
     ("s.toml: api_key_env", "name of the environment variable")),
    ('["kv-cache", "served[server=own]+kv-cache"]', 'endpoint = "http://127.0.0.1:8000/v1"', "",
     ("s.toml: endpoint", "served[server=endpoint]")),
    ('["served[server=endpoint,endpoint=http://127.0.0.1:8000/v1,model_name=m]"]',
     'served_model = "tiny"', "", ("s.toml: served_model", "own model_name")),
])
def test_served_mistakes_are_refused_at_planning(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 variants: str, header: str, keys: str,
                                                 needles: tuple[str, ...]) -> None:
    suite = _suite(tmp_path, variants, header, keys)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--suite", str(suite), "--out", str(out))
    line = assert_refused(code, err, *needles)
    assert "secret" not in line and "sk-not-a-name" not in line
    assert not out.exists()
    code, _, err = cli(capsys, "run", "--suite", str(suite), "--dry-run")
    assert_refused(code, err, *needles)


def test_endpoint_and_env_name_checks() -> None:
    for good in ("http://127.0.0.1:8000/v1", "https://api.example.com/v1",
                 "http://[::1]:8000/v1", "http://host/openai/v1"):
        assert endpoint_problem(good) is None, good
    for bad in ("127.0.0.1:8000/v1", "http:///v1", "http://h:0/v1", "http://h:x/v1",
                "http://h/v1?key=1", "http://h /v1", "http://u@h/v1"):
        assert endpoint_problem(bad) is not None, bad
    assert env_name_problem("OPENAI_API_KEY") is None and env_name_problem("_K1") is None
    for bad in ("1KEY", "sk-abc", "A B", ""):
        why = env_name_problem(bad)
        assert why is not None and (not bad or bad not in why)


def test_the_suites_endpoint_is_the_default_of_endpoint_variants() -> None:
    defaults = {"endpoint": "http://127.0.0.1:8000/v1", "model_name": "m",
                "api_key_env": "KEY"}
    plain = build_stack("served[server=endpoint]", "cpu", "tiny-random", defaults)
    assert plain.settings.options["endpoint"] == "http://127.0.0.1:8000/v1"
    assert plain.settings.options["model_name"] == "m"
    assert plain.settings.owners["option api_key_env"] == SUITE
    own = build_stack("served[server=endpoint,endpoint=http://10.0.0.1:9000/v1,api_key_env=K2]",
                      "cpu", "tiny-random", defaults)
    assert own.settings.options["endpoint"] == "http://10.0.0.1:9000/v1"  # the variant's wins
    assert own.settings.options["api_key_env"] == "K2"
    assert own.settings.options["model_name"] == "m"
    other = build_stack("served[server=own]+kv-cache", "cpu", "tiny-random", defaults)
    assert "endpoint" not in other.settings.options  # only server=endpoint takes them
    with pytest.raises(UserError, match="needs endpoint="):
        build_stack("served[server=endpoint]", "cpu", "tiny-random", {"model_name": "m"})


SWEEP = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 300
[[group]]
name = "load"
workload = "online"
variants = ["served[server=own,policy=continuous]+kv-cache"]
policies = ["continuous"]
arrival = "poisson"
arrival_rates = [20.0]
num_requests = 3
prompt_tokens = 6
new_tokens = 3
ttft_slo_ms = 600000
warmup_requests = 1
min_repeats = 1
max_repeats = 1
"""


def test_sweep_over_a_served_variant(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from infer_opt import cli as cli_module
    from infer_opt.format.io import read_results

    suite = write_suite(tmp_path / "s.toml", SWEEP)
    out = tmp_path / "results"
    rc = cli_module.main(["sweep", "--suite", str(suite), "--group", "load", "--out", str(out),
                          "--max-doublings", "1", "--bisect-steps", "0"])
    assert rc == 0
    [csv_path] = out.glob("*.csv")
    rows = read_results(csv_path).rows
    assert [r["arrival_rate_per_s"] for r in rows] == ["20", "40"]
    for r in rows:
        assert r["status"] == "ok", r["reason"]
        assert float(r["errors"]) == 0 and float(r["server_start_s"]) > 0
    summary = csv_path.with_name(csv_path.stem + ".sweep.md").read_text()
    assert "highest rate meeting the SLO 40 req/s (never failed" in summary
    # Each probe is a job of its own: its server is started and stopped with it.
    assert len(list(csv_path.with_name(csv_path.stem + ".servers").glob("own-*.log"))) == 2


KEY_SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 300
endpoint = "{url}"
served_model = "tiny-random"
api_key_env = "INFER_OPT_TEST_API_KEY"
[[group]]
name = "tax"
variants = ["served[server=endpoint]"]
batch_sizes = [1]
prompt_tokens = 6
new_tokens = 3
min_repeats = 1
max_repeats = 1
warmup_runs = 1
[[group]]
name = "load"
workload = "online"
variants = ["served[server=endpoint]"]
policies = ["continuous"]
arrival = "concurrency"
concurrencies = [2]
num_requests = 3
prompt_tokens = 6
new_tokens = 3
warmup_requests = 1
min_repeats = 1
max_repeats = 1
"""


@contextmanager
def own_server_seeing_keys(seen: list[str | None]) -> Iterator[str]:
    """The own server's app on the tiny model (uvicorn in a thread, a free port), recording
    the Authorization header of every request."""
    from infer_opt.core import registry
    from infer_opt.workloads.online.http_app import PolicyOptions, build_app

    from .conftest import load_engine

    app = build_app(load_engine("kv-cache"), None, registry.load("policy", "continuous"),
                    PolicyOptions(max_batch_size=4, max_wait_ms=20.0), "tiny-random", 512)

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization")
            seen.append(None if auth is None else auth.decode())
        await app(scope, receive, send)

    from .http_fixtures import asgi_in_thread

    with asgi_in_thread(recording) as url:
        yield url


def test_the_api_key_is_sent_and_never_written(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    key = "k3y-" + os.urandom(12).hex()  # nothing else in the world contains it
    seen: list[str | None] = []
    with own_server_seeing_keys(seen) as url:
        suite = write_suite(tmp_path / "s.toml", KEY_SUITE.format(url=url))
        out = tmp_path / "out"
        proc = subprocess.run([sys.executable, "-m", "infer_opt.cli", "run", "--suite",
                               str(suite), "--out", str(out)], capture_output=True, text=True,
                              timeout=400, cwd=tmp_path,
                              env={**os.environ, "INFER_OPT_TEST_API_KEY": key})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Bearer {key}" in seen  # the key was used
    rows = (next(out.glob("*.csv"))).read_text()
    assert "ok" in rows and "from the suite's header" in rows and url in rows
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 3
    for p in written:
        assert key.encode() not in p.read_bytes(), p
    assert key not in proc.stdout and key not in proc.stderr
