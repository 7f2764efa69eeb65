"""The `static-batch` workload: B prompts of P tokens, each extended by exactly N greedy tokens.

Measured through the one decode loop (engines/decode.generate). The runner drives a session:
warm-up, then timed runs one at a time (interleaved with the group's other variants), then
statistics, throughput and roofline over all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from infer_opt.core.errors import UserError
from infer_opt.core.params import Param, check_all
from infer_opt.core.prompts import prompt_batch
from infer_opt.core.roofline import (
    DEFAULT_RIDGE_FLOP_PER_BYTE,
    DecodeStep,
    arithmetic_intensity,
    decode_step_bytes,
    mean_cached_len,
    roofline_pct,
)
from infer_opt.core.stats import Stats
from infer_opt.core.timing import clock_for
from infer_opt.engines.base import BatchRun
from infer_opt.workloads.base import SAMPLING_PARAMS, Sampled, check_fields


@dataclass(frozen=True)
class StaticBatch(Sampled):
    """`batch_size` prompts of exactly `prompt_tokens` tokens, each extended by exactly
    `new_tokens` greedy tokens (no early stop at EOS, so every variant does the same work).

    `warmup_runs` untimed runs come first. A warm-up run generates `warmup_new_tokens` tokens
    (0 = as many as a timed run): the cache-less baseline pays seconds per token, and its
    kernels are warm after a few steps; a plugin whose cost depends on shapes (compile) asks
    for full-length warm-ups. The timed runs follow the sampling rule (`Sampled`).
    """

    batch_size: int = 1
    prompt_tokens: int = 128
    new_tokens: int = 128
    warmup_runs: int = 1
    warmup_new_tokens: int = 0
    kind: str = "static-batch"
    # Runs on any engine: through the decode loop, or the engine's own generate (vLLM).
    needs_step_api: ClassVar[bool] = False
    needs_row_ops: ClassVar[bool] = False
    # Generates through decode.generate, so a plugin's decoder (speculative decoding) applies.
    uses_generate: ClassVar[bool] = True
    # Every field, declared once (core/params.py); validate checks them, the suite loader
    # checks a [[group]] against group_params.
    params: ClassVar[tuple[Param, ...]] = (
        Param("batch_size", int, 1, "prompts per batch", greater_than=0),
        Param("prompt_tokens", int, 128, "tokens per prompt", greater_than=0),
        Param("new_tokens", int, 128, "tokens generated per prompt", greater_than=0),
        Param("warmup_runs", int, 1, "untimed runs first", minimum=0),
        Param("warmup_new_tokens", int, 0, "tokens per warm-up run (0: new_tokens)", minimum=0),
        *SAMPLING_PARAMS,
    )

    @classmethod
    def group_params(cls) -> tuple[Param, ...]:
        """Keys a suite [[group]] may set: batch_sizes expands to one workload per size."""
        size = replace(cls.params[0], name="batch_sizes")
        return (Param("batch_sizes", list, [1], "one workload per batch size", item=size),
                *cls.params[1:])

    def validate(self, max_context: int | None = None) -> None:
        check_fields(self, self.params)
        self.validate_sampling()
        if max_context is not None and self.prompt_tokens + self.new_tokens > max_context:
            raise UserError(
                "workload.prompt_tokens",
                f"prompt_tokens + new_tokens = {self.prompt_tokens + self.new_tokens} exceeds the "
                f"model's context of {max_context} tokens",
            )

    @property
    def warmup_tokens(self) -> int:
        return min(self.warmup_new_tokens or self.new_tokens, self.new_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StaticBatch:
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise UserError("workload", f"unknown key {unknown[0]!r}; allowed: "
                                        f"{', '.join(sorted(allowed))}")
        return cls(**d)

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> list[StaticBatch]:
        """One workload per batch size of a suite group (keys already checked)."""
        values = check_all(cls.group_params(), group, "workload", what="key")
        shared = {p.name: values[p.name] for p in cls.params[1:]}
        return [cls(batch_size=bs, **shared) for bs in values["batch_sizes"]]

    def session(self, ctx: Any) -> StaticSession:
        return StaticSession(self, ctx)


class StaticSession:
    """The static batch on one loaded engine: the same prompts for every run."""

    def __init__(self, w: StaticBatch, ctx: Any) -> None:
        self.w, self.ctx = w, ctx
        # [B, P]: windows of the bundled text (seeded random ids without a tokenizer).
        self.prompts = prompt_batch(w.batch_size, w.prompt_tokens, ctx.ref.vocab_size,
                                    ctx.tokenizer, seed=ctx.cell.seed)
        self.clock = clock_for(ctx.cell.device)
        self.runs: list[BatchRun] = []
        self.rounds: list[int] = []
        self.first_call_ms: float | None = None

    def _generate(self, n: int) -> BatchRun:
        from infer_opt.engines.decode import generate

        with self.ctx.engine.context():
            return generate(self.ctx.engine, self.prompts, n, self.clock)

    def warm_up(self) -> None:
        n = self.w.new_tokens if self.ctx.settings.warmup_full_length else self.w.warmup_tokens
        for i in range(self.w.warmup_runs):
            warm = self._generate(n)
            if i == 0:
                self.first_call_ms = warm.ttft_s * 1e3  # cold: lazy init, allocator, kernels
        self.ctx.settings.counters.clear()  # what plugins counted in the warm-up is not measured

    def run_once(self, round_index: int) -> float:
        run = self._generate(self.w.new_tokens)
        self.runs.append(run)
        self.rounds.append(round_index)
        n = self.w.new_tokens
        # The sampling rule's figure: TPOT, or the whole run for a one-token answer.
        return (run.e2e_s - run.ttft_s) * 1e3 / (n - 1) if n > 1 else run.e2e_s * 1e3

    def _roofline(self, row: dict[str, Any]) -> None:
        """Bytes a decode step reads, the bandwidth that achieves at the median TPOT, and its
        share of the machine's where the step is memory-bound (core/roofline.py)."""
        facts, cell = self.ctx.engine.facts, self.ctx.cell
        if facts.weights is None:
            return
        b, p, n = self.w.batch_size, self.w.prompt_tokens, self.w.new_tokens
        step = DecodeStep(facts.weights, b, self.ctx.settings.kv_cache,
                          kv_bytes_per_token=facts.kv_bytes_per_token,
                          kv_element_bytes=facts.kv_element_bytes,
                          query_groups=facts.query_groups, allocated_len=p + n,
                          mean_context_len=mean_cached_len(p, n))
        step_bytes = decode_step_bytes(step)
        row["bytes_per_decode_step_mb"] = round(step_bytes / 2**20, 2)
        row["achieved_gb_per_s"] = round(step_bytes / (row["tpot_ms_p50"] / 1e3) / 1e9, 2)
        row["arithmetic_intensity_flop_per_byte"] = round(arithmetic_intensity(step), 3)
        ridge = DEFAULT_RIDGE_FLOP_PER_BYTE["cuda" if cell.device.startswith("cuda") else "cpu"]
        pct, why = roofline_pct(step, row["tpot_ms_p50"], cell.bandwidth_gb_per_s, ridge)
        if pct is not None:
            row["roofline_pct"] = round(pct, 1)
        else:
            self.ctx.settings.notes.append(why)

    def finish(self, row: dict[str, Any], samples: dict[str, Any]) -> None:
        b, p, n = self.w.batch_size, self.w.prompt_tokens, self.w.new_tokens
        runs = self.runs
        # Per-run values, computed once here: compare and the table read them, never re-derive.
        per_run: dict[str, list[float]] = {
            "ttft_ms": [r.ttft_s * 1e3 for r in runs],
            "e2e_ms": [r.e2e_s * 1e3 for r in runs],
            "output_tokens_per_s": [b * n / r.e2e_s for r in runs],
            "prefill_tokens_per_s": [b * p / r.ttft_s for r in runs],
            "requests_per_s": [b / r.e2e_s for r in runs],
        }
        if n > 1:
            per_run["tpot_ms"] = [(r.e2e_s - r.ttft_s) * 1e3 / (n - 1) for r in runs]
            per_run["decode_tokens_per_s"] = [b * (n - 1) / (r.e2e_s - r.ttft_s) for r in runs]
        for name in ("ttft_ms", "e2e_ms", "tpot_ms"):
            if name in per_run:
                row.update(Stats.of(per_run[name]).columns(name))
        for name in ("decode_tokens_per_s", "output_tokens_per_s", "prefill_tokens_per_s",
                     "requests_per_s"):
            if name in per_run:
                row[name] = Stats.of(per_run[name]).p50
        if n > 1:
            # Inter-token gaps of every run, pooled (percentiles over gaps, not over runs).
            row.update(Stats.of([x * 1e3 for r in runs for x in r.itl_s]).columns("itl_ms"))
            self._roofline(row)
        row["first_call_ms"] = round(self.first_call_ms if self.first_call_ms is not None
                                     else per_run["ttft_ms"][0], 3)
        samples["runs"] = {"round": list(self.rounds), **per_run}
        samples["itl_ms"] = [[x * 1e3 for x in r.itl_s] for r in runs]
        samples["tokens"] = runs[0].tokens.tolist()  # [B, N] greedy ids of the first timed run
        samples["warmup"] = {"runs": self.w.warmup_runs,
                             "new_tokens": self.w.new_tokens
                             if self.ctx.settings.warmup_full_length else self.w.warmup_tokens}
