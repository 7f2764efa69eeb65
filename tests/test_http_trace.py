"""Trace replay (workloads/online/trace.py): the shipped trace, prompts from block ids,
estimated prefix hits, one-line errors for a bad trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from infer_opt.core.errors import UserError
from infer_opt.workloads.online.trace import (
    TraceRecord,
    TraceWorkload,
    load_trace,
    prefix_hits,
    trace_prompts,
)


def test_shipped_trace_loads_relative_to_its_first_arrival() -> None:
    recs = load_trace("small")
    assert len(recs) == 24 and recs[0].arrival_s == 0.0
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(recs, recs[1:]))


def test_prefix_hits_count_leading_blocks_seen_before() -> None:
    recs = [TraceRecord(0.0, 40, 4, (1, 2)), TraceRecord(1.0, 40, 4, (1, 2, 3)),
            TraceRecord(2.0, 40, 4, (1, 9)), TraceRecord(3.0, 20, 4, (1, 2, 3)),
            TraceRecord(4.0, 40, 4, (2,))]
    # 3rd: block 1 seen; 4th: (1,2) seen but 3 blocks of 16 exceed its 20 tokens -> only
    # whole blocks inside the prompt; 5th: (2,) alone was never a prefix.
    assert prefix_hits(recs, 16) == [0, 32, 16, 16, 0]


def test_prompts_share_exactly_the_shared_blocks() -> None:
    recs = [TraceRecord(0.0, 40, 4, (5, 6)), TraceRecord(0.1, 37, 4, (5, 7))]
    a, b = trace_prompts(recs, 16, 1000, None, seed=0)
    assert len(a) == 40 and len(b) == 37
    assert a[:16] == b[:16] and a[16:32] != b[16:32]
    assert a[32:] != b[32:37]  # own tokens differ


@pytest.mark.parametrize("line, field", [
    ('{"timestamp": 0, "input_length": 0, "output_length": 4}', "input_length"),
    ('{"timestamp": -1, "input_length": 8, "output_length": 4}', "timestamp"),
    ('{"timestamp": 0, "input_length": 8, "output_length": 4, "hash_ids": "x"}', "hash_ids"),
    ('not json', "JSON"),
])
def test_bad_trace_lines_are_one_line_errors(tmp_path: Path, line: str, field: str) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 8, "output_length": 4}\n' + line + "\n")
    with pytest.raises(UserError) as exc:
        load_trace(str(p))
    assert "line 2" in str(exc.value) and field in str(exc.value)


def test_group_fills_counts_and_checks_the_context() -> None:
    (w,) = TraceWorkload.from_group({"policies": ["continuous"], "trace": "small",
                                     "max_requests": 5, "time_scale": 0.5})
    recs = w.records()
    assert w.num_requests == 5 and len(recs) == 5
    assert recs[1].arrival_s == pytest.approx(load_trace("small")[1].arrival_s * 0.5)
    assert w.row_columns()["arrival"] == "trace small x0.5"
    with pytest.raises(UserError, match="context"):
        w.validate(max_context=40)
    with pytest.raises(UserError, match="neither a shipped trace"):
        TraceWorkload.from_group({"trace": "nope"})
