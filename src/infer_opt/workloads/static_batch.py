"""The `static-batch` workload: B prompts of P tokens, each extended by exactly N greedy tokens.

Measured through the one decode loop (engines/decode.generate): warm-up, timed runs,
statistics, throughput and roofline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from infer_opt.core.errors import UserError
from infer_opt.core.prompts import prompt_batch
from infer_opt.core.roofline import bytes_per_decode_step
from infer_opt.core.stats import Stats
from infer_opt.core.timing import clock_for


@dataclass(frozen=True)
class StaticBatch:
    """`batch_size` prompts of exactly `prompt_tokens` tokens, each extended by exactly
    `new_tokens` greedy tokens (no early stop at EOS, so every variant does the same work).

    The batch is timed `repeats` times after `warmup_runs` untimed runs. A warm-up run generates
    `warmup_new_tokens` tokens (0 = as many as a timed run): the cache-less baseline pays
    seconds per token, and its kernels are warm after a few steps.
    """

    batch_size: int = 1
    prompt_tokens: int = 128
    new_tokens: int = 128
    repeats: int = 3
    warmup_runs: int = 1
    warmup_new_tokens: int = 0
    kind: str = "static-batch"
    # Runs on any engine: through the decode loop, or the engine's own generate (vLLM).
    needs_step_api: ClassVar[bool] = False
    # Generates through decode.generate, so a plugin's decoder (speculative decoding) applies.
    uses_generate: ClassVar[bool] = True
    # Keys a suite [[group]] may set for this workload (batch_sizes expands to one per size).
    group_keys: ClassVar[tuple[str, ...]] = ("batch_sizes", "prompt_tokens", "new_tokens",
                                             "repeats", "warmup_runs", "warmup_new_tokens")

    def validate(self, max_context: int | None = None) -> None:
        for name in ("batch_size", "prompt_tokens", "new_tokens", "repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"workload.{name}", f"must be an integer > 0, got {value!r}")
        if not isinstance(self.warmup_runs, int) or self.warmup_runs < 0:
            raise UserError("workload.warmup_runs", f"must be an integer >= 0, got {self.warmup_runs!r}")
        if not isinstance(self.warmup_new_tokens, int) or self.warmup_new_tokens < 0:
            raise UserError("workload.warmup_new_tokens",
                            f"must be an integer >= 0, got {self.warmup_new_tokens!r}")
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
        unknown = set(d) - allowed
        if unknown:
            raise UserError(
                "workload", f"unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        return cls(**d)

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> list[StaticBatch]:
        """One workload per batch size of a suite group (keys already checked)."""
        sizes = group.get("batch_sizes", [1])
        if not isinstance(sizes, list) or not sizes:
            raise UserError("batch_sizes", "must be a non-empty list of integers > 0")
        return [cls(batch_size=bs,
                     prompt_tokens=group.get("prompt_tokens", 128),
                     new_tokens=group.get("new_tokens", 128),
                     repeats=group.get("repeats", 3),
                     warmup_runs=group.get("warmup_runs", 1),
                     warmup_new_tokens=group.get("warmup_new_tokens", 0)) for bs in sizes]

    def measure(self, ctx: Any, row: dict[str, Any], samples: dict[str, Any]) -> None:
        measure_static_batch(self, ctx, row, samples)


def _median(values: list[float]) -> float:
    return Stats.of(values).p50


def measure_static_batch(workload: Any, ctx: Any, row: dict[str, Any],
                         samples: dict[str, Any]) -> None:
    from infer_opt.engines.decode import generate

    cell, engine = ctx.cell, ctx.engine
    facts = engine.facts
    b, p, n = workload.batch_size, workload.prompt_tokens, workload.new_tokens
    prompts = prompt_batch(b, p, ctx.ref.vocab_size, ctx.tokenizer, seed=cell.seed)  # [B, P]
    clock = clock_for(cell.device)
    runs = []
    first_call_ms = None
    with engine.context():
        # A plugin whose cost depends on shapes (compile) asks for warm-ups of full length.
        warm_n = n if ctx.settings.warmup_full_length else workload.warmup_tokens
        for i in range(workload.warmup_runs):
            warm = generate(engine, prompts, warm_n, clock)
            if i == 0:
                first_call_ms = warm.ttft_s * 1e3  # cold: lazy init, allocator, first kernels
        ctx.settings.counters.clear()  # what plugins counted in the warm-up is not measured
        for _ in range(workload.repeats):
            runs.append(generate(engine, prompts, n, clock))
    if first_call_ms is None:
        first_call_ms = runs[0].ttft_s * 1e3

    ttft = [r.ttft_s * 1e3 for r in runs]
    e2e = [r.e2e_s * 1e3 for r in runs]
    row.update(Stats.of(ttft).columns("ttft_ms"))
    row.update(Stats.of(e2e).columns("e2e_ms"))
    if n > 1:
        itl = [x * 1e3 for r in runs for x in r.itl_s]
        tpot = [(r.e2e_s - r.ttft_s) * 1e3 / (n - 1) for r in runs]
        row.update(Stats.of(tpot).columns("tpot_ms"))
        row.update(Stats.of(itl).columns("itl_ms"))
        row["decode_tokens_per_s"] = _median([b * (n - 1) / (r.e2e_s - r.ttft_s) for r in runs])
        step_bytes = bytes_per_decode_step(facts.weight_bytes, facts.kv_bytes_per_token, b, p, n)
        achieved = step_bytes / (row["tpot_ms_p50"] / 1e3) / 1e9
        row["bytes_per_decode_step_mb"] = round(step_bytes / 2**20, 2)
        row["achieved_gb_per_s"] = round(achieved, 2)
        if cell.bandwidth_gb_per_s > 0:
            row["roofline_pct"] = round(100.0 * achieved / cell.bandwidth_gb_per_s, 1)
    row["output_tokens_per_s"] = _median([b * n / r.e2e_s for r in runs])
    row["prefill_tokens_per_s"] = _median([b * p / r.ttft_s for r in runs])
    row["requests_per_s"] = _median([b / r.e2e_s for r in runs])
    row["first_call_ms"] = round(first_call_ms, 3)

    samples["ttft_ms"] = ttft
    samples["e2e_ms"] = e2e
    samples["itl_ms"] = [[x * 1e3 for x in r.itl_s] for r in runs]
    samples["tokens"] = runs[0].tokens.tolist()  # [B, N] greedy ids of the first timed run
    samples["warmup_runs"] = workload.warmup_runs
