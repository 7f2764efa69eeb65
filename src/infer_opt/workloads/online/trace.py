"""Trace replay: the `trace` workload kind serves the requests of a JSONL trace.

One JSON object per line, the format of the public Mooncake traces (Qin et al., "Mooncake",
FAST 2025):
    {"timestamp": 1250, "input_length": 96, "output_length": 24, "hash_ids": [0, 1, 2, 7]}
timestamp: arrival in ms from the trace's start (made relative to its first request);
input_length / output_length: prompt and answer tokens; hash_ids: one id per `block_tokens`
block of the prompt, equal ids = identical token blocks (a shared prefix: a system prompt, an
earlier turn). Mooncake's blocks are 512 tokens; the shipped trace (`small`,
data/trace_small.jsonl, written for this project: 24 requests over ~12 s, three families of
shared prefixes) uses 16-token blocks to fit a small model's context.

Prompts are built from the block ids: each id is a fixed window of the project's text (seeded
random ids without a tokenizer), so requests sharing leading ids share those tokens exactly,
and prompt tokens beyond the listed blocks are the request's own. Prefix hits are estimated
from the ids alone (the leading blocks a request shares with any earlier request, whole blocks
only): they are what a perfect prefix cache could skip, kept in the samples and the row's notes
as an estimate; a server that reports its cached tokens fills `prefix_cached_tokens`, and
vLLM's /metrics `server_prefix_hit_tokens` (engines/http).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

from infer_opt.core.errors import UserError
from infer_opt.core.params import Param, check_all
from infer_opt.workloads.base import SAMPLING_PARAMS
from infer_opt.workloads.online.measure import OnlineSession, online_row_columns
from infer_opt.workloads.online.server import Request
from infer_opt.workloads.online.workload import OnlineWorkload

SHIPPED = {"small": "data/trace_small.jsonl"}


@dataclass(frozen=True)
class TraceRecord:
    arrival_s: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def load_trace(name: str) -> list[TraceRecord]:
    """A shipped trace by name or a JSONL path; one-line UserError naming the line and field."""
    if name in SHIPPED:
        text = files("infer_opt").joinpath(SHIPPED[name]).read_text(encoding="utf-8")
    else:
        path = Path(name)
        if not path.is_file():
            raise UserError("workload.trace", f"{name!r} is neither a shipped trace "
                                              f"({', '.join(SHIPPED)}) nor a file")
        text = path.read_text(encoding="utf-8")
    out: list[TraceRecord] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"workload.trace line {i}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(where, "is not JSON") from None

        def integer(key: str, minimum: int) -> int:
            v = d.get(key) if isinstance(d, dict) else None
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise UserError(where, f"{key} must be an integer >= {minimum}, got {v!r}")
            return v

        ts = d.get("timestamp") if isinstance(d, dict) else None
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or ts < 0:
            raise UserError(where, f"timestamp must be a number >= 0 (ms), got {ts!r}")
        ids = d.get("hash_ids", [])
        if not isinstance(ids, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                 for x in ids):
            raise UserError(where, f"hash_ids must be a list of integers, got {ids!r}")
        out.append(TraceRecord(float(ts) / 1e3, integer("input_length", 1),
                               integer("output_length", 1), tuple(ids)))
    if not out:
        raise UserError("workload.trace", f"{name!r} holds no requests")
    out.sort(key=lambda r: r.arrival_s)
    first = out[0].arrival_s
    return [replace(r, arrival_s=r.arrival_s - first) for r in out]


def block(block_id: int, n: int, vocab_size: int, stream: list[int] | None) -> list[int]:
    """The n tokens of block `block_id`: a fixed window of the text stream, or seeded ids."""
    if stream is None:
        rng = random.Random(f"block-{block_id}")
        return [rng.randrange(3, vocab_size) for _ in range(n)]
    start = (block_id * 7919) % len(stream)
    return [stream[(start + i) % len(stream)] for i in range(n)]


def trace_prompts(records: list[TraceRecord], block_tokens: int, vocab_size: int,
                  tokenizer: Any, seed: int) -> list[list[int]]:
    """Request i's prompt: its blocks in order, cut to input_length; own tokens after them."""
    stream = None
    if tokenizer is not None:
        from infer_opt.core.prompts import text_token_stream

        stream = text_token_stream(tokenizer)
    prompts = []
    for i, r in enumerate(records):
        ids: list[int] = []
        for b in r.hash_ids:
            if len(ids) >= r.input_length:
                break
            ids += block(b, block_tokens, vocab_size, stream)
        # Own tokens: a block id no trace uses (negative), unique per request and seed.
        own = block(-(1 + i + 100_000 * seed), max(r.input_length - len(ids), 0), vocab_size,
                    stream)
        prompts.append((ids + own)[: r.input_length])
    return prompts


def prefix_hits(records: list[TraceRecord], block_tokens: int) -> list[int]:
    """Estimated cacheable prompt tokens per request: its leading whole blocks whose id
    sequence (the prefix up to that block) an earlier request already had."""
    seen: set[tuple[int, ...]] = set()
    hits = []
    for r in records:
        n = 0
        for k in range(1, len(r.hash_ids) + 1):
            if r.hash_ids[:k] in seen and k * block_tokens <= r.input_length:
                n = k
            else:
                break
        hits.append(n * block_tokens)
        seen.update(r.hash_ids[:k] for k in range(1, len(r.hash_ids) + 1))
    return hits


@dataclass(frozen=True)
class TraceWorkload(OnlineWorkload):
    """The requests of a trace (arrival times x `time_scale`), served by `policy`."""

    trace: str = "small"
    block_tokens: int = 16
    time_scale: float = 1.0
    max_requests: int = 0  # 0: all of them
    kind: str = "trace"
    # The trace's own fields; of the online ones, a trace sets what is not in the trace.
    TRACE_PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("trace", str, "small", "a shipped trace name or a JSONL path (Mooncake format)"),
        Param("block_tokens", int, 16, "tokens per shared-prefix block id", minimum=1),
        Param("time_scale", float, 1.0, "arrival times x this (0: all at once)", minimum=0.0),
        Param("max_requests", int, 0, "first N requests of the trace (0: all)", minimum=0),
    )
    FROM_ONLINE: ClassVar[frozenset[str]] = frozenset({
        "policies", "max_batch_size", "max_wait_ms", "ttft_slo_ms", "tpot_slo_ms", "e2e_slo_ms",
        "slo_target_pct", "warmup_requests", *(p.name for p in SAMPLING_PARAMS)})
    params: ClassVar[tuple[Param, ...]] = (*OnlineWorkload.params, *TRACE_PARAMS)

    @classmethod
    def group_params(cls) -> tuple[Param, ...]:
        return (*(p for p in OnlineWorkload.group_params() if p.name in cls.FROM_ONLINE),
                *cls.TRACE_PARAMS)

    def records(self) -> list[TraceRecord]:
        recs = load_trace(self.trace)
        recs = recs[: self.max_requests] if self.max_requests else recs
        return [replace(r, arrival_s=r.arrival_s * self.time_scale) for r in recs]

    def validate(self, max_context: int | None = None) -> None:
        recs = self.records()
        super().validate(None)
        if max_context is not None:
            top = max(r.input_length + r.output_length for r in recs)
            if top > max_context:
                raise UserError("workload.trace", f"longest request ({top} tokens) exceeds the "
                                                  f"model's context of {max_context} tokens")

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> list[TraceWorkload]:
        """One workload per policy; num_requests and the mean lengths come from the trace, so
        the row's identity columns describe it."""
        online = {p.name for p in OnlineWorkload.group_params()}
        base = OnlineWorkload.from_group({k: v for k, v in group.items() if k in online})
        extra = check_all(cls.TRACE_PARAMS, {k: v for k, v in group.items()
                                             if k not in online}, "workload", what="key")
        out = []
        for w in base:
            t = cls(**{**{f.name: getattr(w, f.name) for f in fields(OnlineWorkload)
                          if f.name != "kind"}, **extra})
            t.validate()
            recs = t.records()
            out.append(replace(t, num_requests=len(recs),
                               prompt_tokens=round(sum(r.input_length for r in recs) / len(recs)),
                               new_tokens=round(sum(r.output_length for r in recs) / len(recs))))
        return out

    def session(self, ctx: Any) -> Any:
        return TraceSession(self, ctx)

    def skip_reason(self, settings: Any) -> str | None:
        return None

    def row_columns(self) -> dict[str, Any]:
        cols = online_row_columns(self)
        # An online load like any other (tables, plots, compare): the arrival column says
        # where its requests come from.
        cols.update(workload="online", arrival=f"trace {self.trace}" + (f" x{self.time_scale:g}"
                                                      if self.time_scale != 1 else ""),
                    arrival_rate_per_s="", burstiness="")
        return cols


class TraceSession(OnlineSession):
    """The online session with the trace's requests instead of seeded arrivals."""

    def __init__(self, w: TraceWorkload, ctx: Any) -> None:
        super().__init__(w, ctx)
        recs = w.records()
        prompts = trace_prompts(recs, w.block_tokens, ctx.ref.vocab_size, ctx.tokenizer,
                                ctx.cell.seed)
        self.template = [Request(id=i, arrival_s=r.arrival_s, prompt=p,
                                 new_tokens=r.output_length, prompt_len=len(p))
                         for i, (r, p) in enumerate(zip(recs, prompts))]
        self.prefix_ids = []
        self.hits = prefix_hits(recs, w.block_tokens)
        total = sum(r.input_length for r in recs)
        self.hit_pct = 100.0 * sum(self.hits) / total
        ctx.settings.notes.append(f"trace {w.trace}: estimated prefix hits {self.hit_pct:.1f}% "
                                  f"of prompt tokens ({w.block_tokens}-token blocks; what a "
                                  "perfect prefix cache could skip)")

    def finish(self, row: dict[str, Any], samples: dict[str, Any]) -> None:
        super().finish(row, samples)
        samples["trace"] = {"name": self.w.trace, "block_tokens": self.w.block_tokens,
                            "prefix_hit_tokens_est": self.hits,
                            "prefix_hit_pct_est": self.hit_pct}
