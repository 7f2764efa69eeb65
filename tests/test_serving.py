"""Online serving: arrivals, goodput, batching policies equal to unbatched greedy, prefix
reuse, the rate search, strict workload keys, and one tiny run end to end."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch

from infer_opt.core.errors import UserError
from infer_opt.run.suite import load_suite
from infer_opt.workloads.online.arrivals import arrival_times, lengths
from infer_opt.workloads.online.metrics import RequestTimes, meets_slo, run_columns
from infer_opt.workloads.online.sweep import search_max_rate

from .conftest import write_suite
from .tables import flat

# --- arrivals and lengths ------------------------------------------------------------------


def test_arrivals_are_seeded() -> None:
    a = arrival_times(50, "poisson", 4.0, seed=3)
    assert a == arrival_times(50, "poisson", 4.0, seed=3)
    assert a != arrival_times(50, "poisson", 4.0, seed=4)
    assert a[0] == 0.0 and a == sorted(a)
    assert arrival_times(5, "offline", 4.0) == [0.0] * 5


@pytest.mark.parametrize("arrival,burstiness", [("poisson", 1.0), ("gamma", 0.25), ("gamma", 4.0)])
def test_arrival_gaps_have_the_right_mean_and_burstiness(arrival: str, burstiness: float) -> None:
    rate, n = 5.0, 40_000
    t = arrival_times(n, arrival, rate, burstiness, seed=0)
    gaps = [b - a for a, b in zip(t, t[1:])]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.03)
    # Gamma(k) gaps: squared coefficient of variation 1/k (1 for Poisson).
    cv2 = statistics.pvariance(gaps) / mean**2
    assert cv2 == pytest.approx(1 / burstiness, rel=0.1)


def test_lengths() -> None:
    assert lengths(4, 10, "fixed", 0.5, 0, "p") == [10] * 4
    u = lengths(500, 10, "uniform", 0.5, 0, "p")
    assert min(u) == 5 and max(u) == 15 and u == lengths(500, 10, "uniform", 0.5, 0, "p")


# --- metrics -------------------------------------------------------------------------------


def test_goodput_on_a_hand_made_example() -> None:
    reqs = [
        # arrival, admitted, token stamps (s): ttft 100 ms, tpot 50 ms -> meets both
        RequestTimes(0.0, 0.0, [0.1, 0.15, 0.2]),
        # ttft 300 ms -> misses the 200 ms TTFT SLO
        RequestTimes(0.5, 0.7, [0.8, 0.85, 0.9]),
        # ttft 100 ms, tpot 150 ms -> misses the 100 ms TPOT SLO
        RequestTimes(1.0, 1.0, [1.1, 1.25, 1.4]),
        # one token: no TPOT, ttft 100 ms -> meets; the last token of the run is at 2.0 s
        RequestTimes(1.9, 1.9, [2.0]),
    ]
    slos = {"ttft_ms": 200.0, "tpot_ms": 100.0}
    assert [meets_slo(r, slos) for r in reqs] == [True, False, False, True]
    cols, per_run = run_columns([reqs], slos, target_pct=50.0)
    assert per_run["duration_s"] == [2.0]
    assert cols["duration_s"] == 2.0
    assert cols["goodput_requests_per_s"] == 1.0  # 2 good requests / 2 s
    assert cols["requests_per_s"] == 2.0
    assert cols["output_tokens_per_s"] == 5.0  # 10 tokens / 2 s
    assert cols["slo_met_pct"] == 50.0 and cols["meets_slo"] is True
    assert cols["queue_ms_max"] == pytest.approx(200.0)
    assert cols["ttft_ms_max"] == pytest.approx(300.0)
    assert cols["tpot_ms_max"] == pytest.approx(150.0)
    assert run_columns([reqs], {}, 50.0)[0]["goodput_requests_per_s"] == 2.0  # no SLO: all good
    # Two runs: throughput is the median of the runs' (here the mean of two), latencies pool.
    slower = [RequestTimes(r.arrival_s, r.admitted_s, [2 * s for s in r.stamps_s]) for r in reqs]
    cols, per_run = run_columns([reqs, slower], {}, 50.0)
    assert per_run["requests_per_s"] == [2.0, 1.0] and cols["requests_per_s"] == 1.5
    assert cols["ttft_ms_max"] == pytest.approx(2 * 2000.0 - 1900.0)  # 4.0 s stamp, 1.9 s arrival


# --- the rate search -----------------------------------------------------------------------


def test_search_doubles_then_bisects() -> None:
    res = search_max_rate(lambda r: r <= 3.3, start=1.0, max_doublings=5, bisect_steps=3)
    # Doubling brackets [2, 4]; bisection: 3 passes, 3.5 fails, 3.25 passes.
    assert res.probes == [(1.0, True), (2.0, True), (4.0, False), (3.0, True), (3.5, False),
                          (3.25, True)]
    assert (res.best_rate, res.first_fail) == (3.25, 3.5)
    low = search_max_rate(lambda r: r <= 0.3, start=1.0, max_doublings=5, bisect_steps=0)
    assert (low.best_rate, low.first_fail) == (0.25, 0.5)
    never = search_max_rate(lambda r: True, start=1.0, max_doublings=2, bisect_steps=3)
    assert (never.best_rate, never.first_fail) == (4.0, None)
    assert search_max_rate(lambda r: False, 1.0, 2, 3).best_rate is None


# --- policies on the tiny model: every request's tokens = its unbatched greedy output ------


@pytest.fixture(scope="module", params=["kv-cache", "kv-cache+sdpa"])
def sharp_backend(request: pytest.FixtureRequest):
    """The tiny model (fp32) with larger random weights: its greedy tokens depend on the whole
    context, so a padding, mask or position mistake changes them (with the default init
    std 0.02 the output barely looks past the last token, and broken masks still 'pass')."""
    from .conftest import load_engine

    backend = load_engine(request.param)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in backend.model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 3.0 / p.shape[1] ** 0.5)
    return backend


def serve_tiny(backend, mask_bug: bool = False, **kw):
    """Serve an online workload on the tiny engine; returns the requests and the prefix."""
    from dataclasses import replace

    from infer_opt.core import registry
    from infer_opt.core.timing import HostClock
    from infer_opt.engines import decode
    from infer_opt.workloads.online.measure import build_requests
    from infer_opt.workloads.online.workload import OnlineWorkload

    base = dict(num_requests=7, arrival="poisson", arrival_rate_per_s=300.0, prompt_tokens=10,
                new_tokens=6, lengths="uniform", max_batch_size=3, max_wait_ms=5.0)
    w = OnlineWorkload(**{**base, **kw})
    w.validate(512)
    reqs, prefix_ids = build_requests(w, 512, None, seed=0)
    step = backend.step
    if mask_bug:  # attend to padding: what the test must catch
        backend.step = lambda inp: step(replace(inp, attention_mask=None))
    try:
        with backend.context():
            prefix = decode.make_prefix(backend, prefix_ids) if w.prefix_reuse else None
            stats = registry.load("policy", w.policy)(backend, reqs, HostClock(), w, prefix)
    finally:
        backend.step = step
    return reqs, prefix_ids, stats


def unbatched(backend, prompt: list[int], n: int) -> list[int]:
    from infer_opt.core.timing import HostClock
    from infer_opt.engines.decode import generate

    with backend.context():
        return generate(backend, torch.tensor([prompt]), n, HostClock()).tokens[0].tolist()


@pytest.mark.parametrize("policy_name", ["sequential", "dynamic", "continuous"])
def test_policy_tokens_equal_unbatched_greedy(sharp_backend, policy_name: str) -> None:
    reqs, _, stats = serve_tiny(sharp_backend, policy=policy_name)
    assert len({len(r.prompt) for r in reqs}) > 1  # lengths differ: padding is exercised
    for r in reqs:
        assert len(r.tokens) == r.new_tokens
        assert r.tokens == unbatched(sharp_backend, r.prompt, r.new_tokens), r.id
    if policy_name != "sequential":
        assert max(stats.step_batch_sizes) > 1  # requests were really batched


def test_continuous_batching_joins_between_decode_steps(sharp_backend) -> None:
    reqs, _, stats = serve_tiny(sharp_backend, policy="continuous", arrival="gamma",
                                arrival_rate_per_s=150.0, burstiness=0.5, max_batch_size=4)
    sizes = stats.step_batch_sizes
    # The batch grew after it had started decoding: someone joined a running batch.
    assert any(b > a > 0 for a, b in zip(sizes, sizes[1:]))
    for r in reqs:
        assert r.tokens == unbatched(sharp_backend, r.prompt, r.new_tokens), r.id


def test_the_equality_check_catches_a_padding_bug(sharp_backend) -> None:
    reqs, _, _ = serve_tiny(sharp_backend, mask_bug=True, policy="dynamic", arrival="offline",
                            max_batch_size=7)
    assert any(r.tokens != unbatched(sharp_backend, r.prompt, r.new_tokens) for r in reqs)


@pytest.mark.parametrize("policy_name", ["dynamic", "continuous"])
def test_prefix_reuse_gives_identical_tokens(sharp_backend, policy_name: str) -> None:
    kw = dict(policy=policy_name, prompts="shared-prefix", prefix_tokens=24)
    plain, prefix_ids, _ = serve_tiny(sharp_backend, **kw)
    reused, prefix_again, _ = serve_tiny(sharp_backend, prefix_reuse=True, **kw)
    assert prefix_ids == prefix_again and len(prefix_ids) == 24
    for a, b in zip(plain, reused):
        assert a.prompt == prefix_ids + b.prompt  # with reuse only the question is prefilled
        assert a.tokens == b.tokens == unbatched(sharp_backend, a.prompt, a.new_tokens)


# --- suites: strict keys, and one tiny run end to end ---------------------------------------

ONLINE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 120
[[group]]
name = "load"
workload = "online"
variants = ["kv-cache", "baseline"]
policies = ["sequential", "continuous"]
arrival = "poisson"
arrival_rates = [100.0, 400.0]
num_requests = 6
prompt_tokens = 8
new_tokens = 4
max_batch_size = 4
ttft_slo_ms = 10000
warmup_requests = 1
min_repeats = 2
max_repeats = 2
[[group]]
name = "prefix"
workload = "online"
variants = ["kv-cache", "baseline"]
policies = ["dynamic"]
arrival = "offline"
num_requests = 4
prompts = "shared-prefix"
prefix_tokens = 32
prompt_tokens = 6
new_tokens = 4
max_wait_ms = 1
prefix_reuse = [false, true]
min_repeats = 2
max_repeats = 2
"""


def test_online_group_expands_policies_rates_and_reuse(tmp_path: Path) -> None:
    suite = load_suite(str(write_suite(tmp_path / "s.toml", ONLINE)))
    load, prefix = suite.groups
    assert [(w.policy, w.arrival_rate_per_s) for w in load.workloads] == [
        ("sequential", 100.0), ("sequential", 400.0), ("continuous", 100.0), ("continuous", 400.0)]
    assert [w.prefix_reuse for w in prefix.workloads] == [False, True]
    assert load.workloads[0].slos_ms() == {"ttft_ms": 10000.0}


@pytest.mark.parametrize("old,new,needles", [
    ("max_batch_size = 4", "max_batch_size = 4\nbatch_sizes = [2]", ("unknown key 'batch_sizes'", "policies")),
    ('policies = ["sequential", "continuous"]', 'policies = ["orca"]', ("policies", "'orca'", "continuous")),
    ('arrival = "poisson"', 'arrival = "bursty"', ("arrival", "poisson, gamma, offline")),
    ("arrival_rates = [100.0, 400.0]", "arrival_rates = [0]", ("arrival_rates", "> 0")),
    ("num_requests = 6", "num_requests = 0", ("num_requests", ">= 1")),
    ("ttft_slo_ms = 10000", "ttft_slo_ms = -1", ("ttft_slo_ms", ">= 0")),
    ("ttft_slo_ms = 10000", 'ttft_slo_ms = "1s"', ("ttft_slo_ms", "number")),
    ('prompts = "shared-prefix"', 'prompts = "chat"', ("prompts", "text, shared-prefix")),
    ('prompts = "shared-prefix"\n', "", ("prefix_tokens", "shared-prefix")),
    ("prefix_reuse = [false, true]", 'prefix_reuse = "yes"', ("prefix_reuse", "true, false")),
])
def test_bad_online_keys_are_one_line_errors(tmp_path: Path, old: str, new: str,
                                             needles: tuple[str, ...]) -> None:
    assert old in ONLINE
    with pytest.raises(UserError) as err:
        load_suite(str(write_suite(tmp_path / "s.toml", ONLINE.replace(old, new, 1))))
    msg = str(err.value)
    assert "\n" not in msg and "group[" in msg
    for n in needles:
        assert n in msg, msg


def test_tiny_online_run_end_to_end(tmp_path: Path) -> None:
    from infer_opt.results.serving_plot import write_plot
    from infer_opt.results.table import render
    from infer_opt.run.runner import run_suite

    body = ONLINE.replace("arrival_rates = [100.0, 400.0]", "arrival_rates = [400.0]")
    suite = load_suite(str(write_suite(tmp_path / "s.toml", body)))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    samples = [json.loads(x) for x in
               csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 + 2 * 2

    def pick(variant: str, policy: str, reuse: str = "False") -> int:
        return next(i for i, r in enumerate(rows) if r["variant"] == variant
                    and r["policy"] == policy and r["prefix_reuse"] == reuse)

    no_cache_reuse = pick("baseline", "dynamic", "True")
    for i, r in enumerate(rows):
        if i == no_cache_reuse:
            continue
        assert r["status"] == "ok", r["reason"]
        for col in ("ttft_ms_max", "tpot_ms_p50", "e2e_ms_max", "queue_ms_p50",
                    "output_tokens_per_s", "requests_per_s", "goodput_requests_per_s",
                    "mean_batch_size", "slo_met_pct"):
            assert r[col] != "", col
        assert r["workload"] == "online" and r["timed_runs"] == "2"
    seq = pick("kv-cache", "sequential")
    assert rows[seq]["meets_slo"] == "True" and rows[seq]["max_batch_size"] == "1"
    # Reusing a prefix copies its KV cache: the baseline has none.
    assert rows[no_cache_reuse]["status"] == "skipped"
    assert "add kv-cache" in rows[no_cache_reuse]["reason"]
    reuse, plain = pick("kv-cache", "dynamic", "True"), pick("kv-cache", "dynamic")
    assert float(rows[reuse]["prefix_prefill_ms"]) > 0
    # Every request of both timed runs, each with its round.
    assert len(samples[seq]["requests"]) == 2 * 6 and len(samples[seq]["tokens"][0]) == 4
    assert sorted({r["round"] for r in samples[seq]["requests"]}) == [0, 1]
    assert samples[reuse]["tokens"] == samples[plain]["tokens"]  # prefix reuse: same tokens
    # The baseline serves through the same loop without a cache: the same tokens.
    assert samples[pick("baseline", "sequential")]["tokens"] == samples[seq]["tokens"]
    assert samples[pick("baseline", "dynamic")]["tokens"] == samples[plain]["tokens"]
    text = flat(render(csv_path))
    assert "## Online load" in text
    reuse_line = next(ln for ln in text.splitlines() if "| dynamic |" in ln and "| True |" in ln)
    assert "x | 4/4 |" in reuse_line  # TTFT ratio and identical tokens, printed
    png = write_plot(csv_path)
    assert png is not None and png.stat().st_size > 0 and png.name.endswith(".serving.png")


def test_shipped_serving_suite_is_valid() -> None:
    from infer_opt.core.stack import build_stack

    suite = load_suite("serving")
    kinds = set()
    for g in suite.groups:
        for v in g.variants:
            assert build_stack(v, "cpu").engine.step_api
        for w in g.workloads:
            w.validate(8192)
            kinds.add((w.policy, w.prompts))
    assert {p for p, _ in kinds} == {"sequential", "dynamic", "continuous"}
    assert ("sequential", "shared-prefix") in kinds


def test_online_policies_go_through_the_stacks_step_wrappers(tmp_path: Path) -> None:
    """A serving row measures exactly its stack: every forward step of every policy goes through
    the plugin's step wrapper (counted into the plugin's own metric column), on torch and ort."""
    from infer_opt.run.runner import run_suite

    body = """
model = "tiny-random"
device = "cpu"
threads = 1
[[group]]
workload = "online"
variants = ["kv-cache+test-count", "ort+test-count"]
policies = ["sequential", "dynamic", "continuous"]
arrival = "offline"
num_requests = 3
prompt_tokens = 6
new_tokens = 3
lengths = "uniform"
warmup_requests = 0
min_repeats = 1
max_repeats = 1
[[group]]
variants = ["kv-cache+test-count"]
batch_sizes = [2]
prompt_tokens = 6
new_tokens = 3
min_repeats = 2
max_repeats = 2
warmup_runs = 1
"""
    suite = load_suite(str(write_suite(tmp_path / "s.toml", body)))
    csv_path = run_suite(suite, tmp_path / "results", log=lambda _m: None)
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames[-1] == "test_forward_steps"  # the plugin's declared column
        rows = list(reader)
    samples = [json.loads(x) for x in
               csv_path.with_name(csv_path.stem + ".samples.jsonl").read_text().splitlines()]
    for r, s in zip(rows[:6], samples[:6]):
        assert r["status"] == "ok", r["reason"]
        # No warm-up requests: exactly one wrapped step per served step of the policy.
        assert int(float(r["test_forward_steps"])) == len(s["step_batch_sizes"]) > 0
    # Static batch: (1 warm-up + 2 timed runs) x (prefill + 2 decode steps).
    assert int(float(rows[6]["test_forward_steps"])) == 3 * 3
    # The declared column reaches the table and compare too.
    from infer_opt.format.io import read_results
    from infer_opt.results.compare import compare
    from infer_opt.results.table import render

    assert "| test_forward_steps |" in flat(render(csv_path)).split("## Plugin metrics", 1)[1]
    cmp = compare(read_results(csv_path), read_results(csv_path), absolute=True)
    assert any(m.metric == "test_forward_steps" for r in cmp.rows for m in r.metrics)
