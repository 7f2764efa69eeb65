"""Fixed concurrency (arrival = "concurrency", workloads/online/closed_loop.py): N closed-loop
clients, never more than N requests in flight, every request served, in process through every
policy and over HTTP through the own server; bad values are one line, exit 2, nothing written."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from infer_opt.core.errors import UserError
from infer_opt.workloads.online.closed_loop import ClosedLoop
from infer_opt.workloads.online.server import Request
from infer_opt.workloads.online.workload import OnlineWorkload

from .conftest import write_suite
from .tables import flat
from .test_serving import sharp_backend, unbatched  # noqa: F401  (fixture reused)
from .trust_helpers import assert_refused, cli


def max_in_flight(spans: list[tuple[float, float]]) -> int:
    """Most half-open [start, end) spans covering one instant (an end frees its slot before a
    start at the same instant takes it)."""
    events = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def check_closed_loop(reqs: list[dict[str, Any]], n: int) -> None:
    """At most n requests between arrival and last token (and so between admission and last
    token); the first n arrive at t = 0 and every later one when an earlier one ended."""
    assert max_in_flight([(r["arrival_s"], r["stamps_s"][-1]) for r in reqs]) <= n
    assert max_in_flight([(r["admitted_s"], r["stamps_s"][-1]) for r in reqs]) <= n
    ends = {r["stamps_s"][-1] for r in reqs}
    by_arrival = sorted(reqs, key=lambda r: (r["arrival_s"], r["id"]))
    assert [r["arrival_s"] for r in by_arrival[:n]] == [0.0] * min(n, len(reqs))
    for r in by_arrival[n:]:
        assert r["arrival_s"] in ends  # sent exactly when a slot freed
        assert r["admitted_s"] >= r["arrival_s"]


@pytest.mark.parametrize("policy", ["sequential", "dynamic", "continuous"])
@pytest.mark.parametrize("n", [1, 3])
def test_never_more_than_n_in_flight_for_every_policy(sharp_backend, policy: str,  # noqa: F811
                                                       n: int) -> None:
    from infer_opt.core import registry
    from infer_opt.core.timing import HostClock
    from infer_opt.workloads.online.measure import build_requests

    w = OnlineWorkload(policy=policy, arrival="concurrency", concurrency=n, num_requests=7,
                       prompt_tokens=10, new_tokens=5, lengths="uniform", max_batch_size=4,
                       max_wait_ms=5.0)
    w.validate(512)
    reqs, _ = build_requests(w, 512, None, seed=0)
    src = ClosedLoop(reqs, n)
    with sharp_backend.context():
        stats = registry.load("policy", policy)(sharp_backend, src, HostClock(), w, None)
    assert not src.open and src.in_flight == 0
    for r in reqs:
        assert r.done and r.tokens == unbatched(sharp_backend, r.prompt, r.new_tokens), r.id
    check_closed_loop([{"id": r.id, "arrival_s": r.arrival_s, "admitted_s": r.admitted_s,
                        "stamps_s": r.stamps_s} for r in reqs], n)
    assert max(stats.step_batch_sizes) <= n


def test_a_short_request_frees_its_slot_when_the_engine_fills_requests_whole() -> None:
    reqs = [Request(id=i, arrival_s=0.0, prompt=[1], new_tokens=4) for i in range(3)]
    src = ClosedLoop(reqs, 2, whole=True)
    assert [r.id for r in src.due(0.0)] == [0, 1] and src.next_arrival_s() is None
    reqs[0].tokens, reqs[0].stamps_s = [5, 6], [0.3, 0.4]  # a server stopped it after 2 tokens
    assert [r.id for r in src.due(0.5)] == [2] and reqs[2].arrival_s == 0.4
    in_process = ClosedLoop([Request(id=i, arrival_s=0.0, prompt=[1], new_tokens=4)
                             for i in range(3)], 2)
    first = in_process.due(0.0)
    first[0].add(5, 0.3)  # one token of four: still in flight
    assert in_process.due(0.5) == [] and in_process.open


def test_group_expands_concurrencies() -> None:
    ws = OnlineWorkload.from_group({"arrival": "concurrency", "concurrencies": [1, 4],
                                    "policies": ["sequential", "continuous"]})
    assert [(w.policy, w.concurrency) for w in ws] == [
        ("sequential", 1), ("sequential", 4), ("continuous", 1), ("continuous", 4)]
    cols = ws[1].row_columns()
    assert cols["arrival"] == "concurrency" and cols["concurrency"] == 4
    assert cols["arrival_rate_per_s"] == ""
    (open_loop,) = OnlineWorkload.from_group({"arrival_rates": [2.0], "policies": ["dynamic"]})
    assert open_loop.concurrency == 0 and open_loop.row_columns()["concurrency"] == ""
    with pytest.raises(UserError, match="concurrency"):
        OnlineWorkload(arrival="poisson", concurrency=2).validate()


BAD_SUITE = """
model = "tiny-random"
device = "cpu"
[[group]]
workload = "online"
variants = ["kv-cache"]
policies = ["continuous"]
num_requests = 4
{keys}
"""


@pytest.mark.parametrize("keys, needles", [
    ('arrival = "concurrency"\nconcurrencies = [0]', ("group[0]", "concurrencies must be >= 1")),
    ('arrival = "concurrency"\nconcurrencies = [2.5]', ("concurrencies", "integer")),
    ('arrival = "concurrency"\nconcurrencies = []', ("concurrencies", "non-empty")),
    ('arrival = "poisson"\nconcurrencies = [2]', ("group[0].concurrencies",
                                                   'needs arrival = "concurrency"')),
    ("concurrencies = [2]", ("group[0].concurrencies", "'poisson'")),
    ('arrival = "concurrency"\narrival_rates = [1.0]', ("group[0].arrival_rates",
                                                         "use concurrencies")),
    ('arrival = "closed"', ("arrival", "poisson, gamma, offline, concurrency")),
])
def test_bad_concurrency_is_one_line_exit_2_nothing_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: str,
        needles: tuple[str, ...]) -> None:
    suite = write_suite(tmp_path / "s.toml", BAD_SUITE.format(keys=keys))
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--suite", str(suite), "--out", str(out))
    assert_refused(code, err, *needles)
    assert not out.exists()


SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 300
[[group]]
name = "closed"
workload = "online"
variants = ["kv-cache", "served[server=own,policy=continuous]+kv-cache"]
policies = ["continuous"]
arrival = "concurrency"
concurrencies = [1, 2]
num_requests = 5
prompt_tokens = 6
new_tokens = 4
max_batch_size = 4
warmup_requests = 1
min_repeats = 2
max_repeats = 2
"""


def test_concurrency_in_process_and_through_the_own_server(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from infer_opt.results.table import render
    from infer_opt.run.runner import run_suite
    from infer_opt.run.suite import load_suite

    suite = load_suite(str(write_suite(tmp_path / "s.toml", SUITE)))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    rows = list(csv.DictReader(open(csv_path, newline="")))
    samples = [json.loads(x) for x in
               csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()]
    served = "served[server=own,policy=continuous]+kv-cache"
    assert sorted((r["variant"], r["concurrency"]) for r in rows) == [
        ("kv-cache", "1"), ("kv-cache", "2"), (served, "1"), (served, "2")]
    tokens: dict[str, list[Any]] = {}
    for row, s in zip(rows, samples):
        assert row["status"] == "ok", row["reason"]
        assert row["arrival"] == "concurrency" and row["arrival_rate_per_s"] == ""
        n = int(row["concurrency"])
        by_round: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in s["requests"]:
            assert "error" not in r and len(r["stamps_s"]) == 4
            by_round[r["round"]].append(r)
        assert len(by_round) == 2
        for reqs in by_round.values():
            assert sorted(r["id"] for r in reqs) == list(range(5))  # every request served
            check_closed_loop(reqs, n)
        if row["variant"] == served:
            assert float(row["errors"]) == 0 and float(row["short_requests"]) == 0
        tokens.setdefault(row["concurrency"], s["tokens"])
        assert s["tokens"] == tokens[row["concurrency"]]  # served = in process, greedy
    text = render(csv_path)
    served_section = text.split("## Served vs in-process", 1)[1]
    assert f"| {served} | kv-cache | online | 2 clients |" in flat(served_section)
    section = text.split("## Online load", 1)[1].split("\n## ", 1)[0]
    table = [[c.strip() for c in ln.strip().strip("|").split("|")]
             for ln in section.splitlines() if ln.startswith("|")]
    head, body = table[0], table[2:]  # the header, its separator line, the rows
    shown = sorted((c[head.index("variant")], c[head.index("concurrency")],
                    c[head.index("rate/s")]) for c in body)
    assert shown == [("kv-cache", "1", ""), ("kv-cache", "2", ""), (served, "1", ""),
                     (served, "2", "")]
