"""The depth axis of static batches on the tiny random model: the context is prefilled outside
the timed region, the timed run appends the prompt at depth, KV memory by hand, bad depths."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from infer_opt.core.models import resolve
from infer_opt.engines.decode import generate
from infer_opt.workloads.static_batch import StaticBatch

from .conftest import load_engine, write_suite
from .test_cli_errors import assert_one_line_error, cli

# tiny-random: 2 layers x 2 KV heads x head_dim 16, K and V -> 128 cached values per token.
VALUES_PER_TOKEN = 2 * 2 * 2 * 16


class RecordingClock:
    """A host clock that says whether it is running, so a step can tell timed from untimed."""

    def __init__(self) -> None:
        self.running = False
        self.stamps: list[float] = []

    def start(self) -> None:
        self.running, self.stamps = True, []

    def stamp(self) -> None:
        self.stamps.append(float(len(self.stamps) + 1))

    def finish(self) -> list[float]:
        self.running = False
        return self.stamps


def session_for(variant: str, w: StaticBatch) -> tuple[Any, list[tuple[bool, int, int]], Any]:
    """A workload session on a loaded tiny engine whose steps are recorded as
    (inside the timed region, tokens fed, position of the first one)."""
    engine = load_engine(variant)
    calls: list[tuple[bool, int, int]] = []
    clock = RecordingClock()
    raw = engine.step

    def step(inp: Any) -> torch.Tensor:
        calls.append((clock.running, int(inp.input_ids.shape[1]), int(inp.position_ids[0, 0])))
        return raw(inp)

    engine.step = step
    cell = SimpleNamespace(seed=0, device="cpu", threads=1, bandwidth_gb_per_s=10.0)
    ctx = SimpleNamespace(cell=cell, ref=resolve("tiny-random"), settings=engine.settings,
                          engine=engine, tokenizer=None)
    session = w.session(ctx)
    session.clock = clock
    return session, calls, engine


@pytest.mark.parametrize("variant", ["kv-cache", "static-cache", "kv-cache+sdpa", "kv-int8"])
def test_depth_prefill_is_outside_the_timed_region(variant: str) -> None:
    if variant == "kv-int8":
        pytest.importorskip("hqq")
    d, p, n = 40, 8, 5
    w = StaticBatch(batch_size=2, prompt_tokens=p, new_tokens=n, depth_tokens=d, warmup_runs=1)
    session, calls, _ = session_for(variant, w)
    session.warm_up()
    # Timed: the prompt chunk at position d, then n - 1 single tokens; nothing untimed.
    timed = [(True, p, d)] + [(True, 1, d + p + i) for i in range(n - 1)]
    # The context (512-token chunks at most: here one of 40) before the clock ever starts,
    # then the warm-up run, timed like a measured one.
    assert calls == [(False, d, 0)] + timed
    calls.clear()
    session.run_once(0)
    assert calls == timed
    run = session.runs[0]
    assert len(run.stamps_s) == n and tuple(run.tokens.shape) == (2, n)
    session.run_once(1)  # the context is restored: the same greedy tokens again
    assert torch.equal(session.runs[0].tokens, session.runs[1].tokens)


@pytest.mark.parametrize("variant", ["kv-cache", "kv-cache+sdpa"])
def test_tokens_at_depth_are_the_tokens_of_the_whole_prompt(variant: str) -> None:
    """Prefilled at depth (chunked, outside the clock) or as one long prompt: same tokens."""
    # > 512: the context is prefilled in two chunks (past the tiny config's 512 positions,
    # which rotary embeddings extend; no suite would be allowed to ask for it)
    d, p, n = 600, 8, 6
    w = StaticBatch(batch_size=1, prompt_tokens=p, new_tokens=n, depth_tokens=d)
    session, _, engine = session_for(variant, w)
    session.warm_up()
    session.run_once(0)
    whole = torch.cat([session.context, session.prompts], dim=1)  # [1, d + p]
    with engine.context():
        ref = generate(engine, whole, n, RecordingClock())
    assert torch.equal(session.runs[0].tokens, ref.tokens)


@pytest.mark.parametrize("variant,elem", [("kv-cache", 4), ("kv-cache+bf16", 2)])
def test_kv_bytes_by_hand(variant: str, elem: int) -> None:
    d, p, n, b = 24, 8, 4, 2
    w = StaticBatch(batch_size=b, prompt_tokens=p, new_tokens=n, depth_tokens=d)
    session, _, engine = session_for(variant, w)
    assert engine.facts.kv_bytes_per_token == VALUES_PER_TOKEN * elem
    session.warm_up()
    session.run_once(0)
    kv = session.kv
    used = b * (d + p + n - 1) * VALUES_PER_TOKEN * elem  # the last token is never fed
    assert (kv.allocated_bytes, kv.used_bytes) == (used, used)
    assert kv.dtype == ("float32" if elem == 4 else "bfloat16")
    assert kv.bytes_per_token == VALUES_PER_TOKEN * elem


def test_static_cache_allocates_its_capacity() -> None:
    d, p, n = 24, 8, 4
    w = StaticBatch(batch_size=1, prompt_tokens=p, new_tokens=n, depth_tokens=d)
    session, _, _ = session_for("static-cache", w)
    session.warm_up()
    session.run_once(0)
    kv = session.kv
    assert kv.allocated_bytes == (d + p + n) * VALUES_PER_TOKEN * 4
    assert kv.used_bytes == (d + p + n - 1) * VALUES_PER_TOKEN * 4


def test_from_group_makes_one_workload_per_batch_size_and_depth() -> None:
    ws = StaticBatch.from_group({"batch_sizes": [1, 2], "depths": [0, 64], "prompt_tokens": 8})
    assert [(w.batch_size, w.depth_tokens) for w in ws] == [(1, 0), (1, 64), (2, 0), (2, 64)]
    assert ws[1].row_columns() == {"depth_tokens": 64}


SUITE = """
model = "tiny-random"
device = "cpu"
threads = 1
timeout_s = 120
[[group]]
variants = [{variants}]
batch_sizes = [1]
depths = [{depths}]
prompt_tokens = 8
new_tokens = 4
min_repeats = 2
max_repeats = 2
warmup_runs = 1
"""


@pytest.mark.parametrize("variants,depths,needles", [
    ('"kv-cache"', "0, 600", ("workload.depths", "depth 600 +", "= 612", "context of 512")),
    ('"baseline"', "0, 64", ("no KV cache", "add kv-cache")),
    ('"kv-cache"', "-1", ("depths", ">= 0", "-1")),
])
def test_bad_depths_are_refused_up_front(tmp_path: Path, variants: str, depths: str,
                                         needles: tuple[str, ...]) -> None:
    suite = write_suite(tmp_path / "s.toml", SUITE.format(variants=variants, depths=depths))
    out = tmp_path / "results"
    assert_one_line_error(cli("run", "--suite", str(suite), "--out", str(out), cwd=tmp_path),
                          *needles)
    assert not out.exists()


def test_depth_rows_through_the_runner(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.toml", SUITE.format(variants='"kv-cache", "kv-cache+sdpa"',
                                                          depths="0, 32"))
    out = tmp_path / "results"
    assert cli("run", "--suite", str(suite), "--out", str(out), cwd=tmp_path).returncode == 0
    csv_path = next(out.glob("*.csv"))
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["variant"], r["depth_tokens"]) for r in rows) == [
        ("kv-cache", "0"), ("kv-cache", "32"), ("kv-cache+sdpa", "0"), ("kv-cache+sdpa", "32")]
    for r in rows:
        assert r["status"] == "ok", r["reason"]
        d = int(r["depth_tokens"])
        assert float(r["kv_used_mb"]) == round((d + 8 + 4 - 1) * VALUES_PER_TOKEN * 4 / 2**20, 3)
        assert r["kv_dtype"] == "float32"
        assert r["run_added_mb_p50"] != "" and r["bandwidth_method"].startswith("cpu streaming")
        assert ("context prefilled once" in r["notes"]) == (d > 0)
        # Fidelity at depth on depth rows only; fp32 rows match the fp32 reference.
        assert (r["top1_at_depth_pct"] != "") == (d > 0), r["notes"]
        if d:
            assert float(r["top1_at_depth_pct"]) == 100.0 and float(r["kl_at_depth_mean"]) < 1e-6
    # compare joins rows by depth: the run against itself pairs all four rows, no regression.
    proc = cli("compare", str(csv_path), str(csv_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no regression in 4 matched rows" in proc.stdout
    assert "kv-cache static-batch bs=1 prompt=8 new=4 depth=32 " in proc.stdout
    # The report plots decode tok/s and KV MB against depth, one curve per variant.
    from infer_opt.results.depth_plot import curves
    from infer_opt.results.report import write_report

    assert list(curves(rows)) == ["kv-cache bs1", "kv-cache+sdpa bs1"]
    report = write_report(csv_path, reference="kv-cache").read_text()
    assert "## Decode speed and KV memory vs depth" in report
    assert csv_path.with_name(csv_path.stem + ".depth.png").read_bytes()[:4] == b"\x89PNG"


def test_decode_step_bytes_include_the_kv_read_at_depth() -> None:
    from infer_opt.core.roofline import DecodeStep, decode_step_bytes

    d, p, n = 400, 8, 4
    w = StaticBatch(batch_size=1, prompt_tokens=p, new_tokens=n, depth_tokens=d, min_repeats=2)
    session, _, engine = session_for("kv-cache", w)
    session.warm_up()
    session.run_once(0)
    session.run_once(1)
    row: dict[str, Any] = {}
    session.finish(row, {})
    weights = decode_step_bytes(DecodeStep(engine.facts.weights, 1, "none"))
    # Each decode step reads the weights and, on average, d + p + n/2 cached tokens.
    kv = VALUES_PER_TOKEN * 4 * (d + p + n / 2)
    assert row["bytes_per_decode_step_mb"] == round((weights + kv) / 2**20, 2)
    assert row["kv_used_mb"] == round((d + p + n - 1) * VALUES_PER_TOKEN * 4 / 2**20, 3)


def test_run_memory_measures_what_a_run_adds() -> None:
    from infer_opt.core.memory import RunMemory, peak_rss_mb, reset_peak_rss

    reset_peak_rss()
    memory = RunMemory()
    for _ in range(3):
        with memory.measure():
            x = torch.ones(32 * 2**20 // 4)  # 32 MiB, touched
            del x
    assert len(memory.added_mb) == 3 and all(30 < v < 100 for v in memory.added_mb)
    cols = memory.columns()
    assert cols["run_added_mb_ci_low"] <= cols["run_added_mb_p50"] <= cols["run_added_mb_ci_high"]
    # The cell's peak still counts the runs although each one restarted the kernel's count.
    assert peak_rss_mb() >= max(memory.added_mb)


def test_roofline_above_100_percent_is_kept_and_explained() -> None:
    from infer_opt.core.roofline import (
        DecodeStep,
        Weight,
        WeightBytes,
        bandwidth_method,
        cpu_buffer_mib,
        roofline_pct,
    )

    step = DecodeStep(WeightBytes((Weight("w", 1000, 4000),)), 1, "dynamic",
                      kv_bytes_per_token=8, mean_context_len=0.0)
    # 4000 bytes in 1 ms = 0.004 GB/s against a 0.0032 GB/s ceiling: 125%, never clamped.
    pct, why = roofline_pct(step, 1.0, 0.0032, 8.0)
    assert pct == pytest.approx(125.0) and "above the measured read ceiling" in why
    assert cpu_buffer_mib() == 64  # tests/conftest.py
    assert bandwidth_method("cpu", 2) == ("cpu streaming read (torch sum, 2 threads) over 64 MiB "
                                          "fp32, 2 passes per try, best of 7 tries")


def test_read_ceiling_buffer_is_far_larger_than_the_last_level_cache(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from infer_opt.core import roofline

    monkeypatch.delenv("INFER_OPT_BANDWIDTH_MIB")
    monkeypatch.setattr(roofline, "_last_level_cache_bytes", lambda: 300 * 2**20)  # 300 MiB L3
    assert roofline.cpu_buffer_mib() == 2048
    monkeypatch.setattr(roofline, "_last_level_cache_bytes", lambda: 1024 * 2**20)
    assert roofline.cpu_buffer_mib() == 4096
