"""The `static-batch` workload: B prompts of P tokens, each extended by exactly N greedy tokens.

At depth D (`depths = [0, 512, ...]` in a suite group, `depth_tokens` in a row) each row first
holds D tokens of context in its KV cache, prefilled once before any timed run and restored
before every run (Engine.checkpoint), never inside the timed region; the timed run then
appends the P-token prompt at positions D.. (TTFT and prefill_tokens_per_s: llama-bench's pp
at depth) and decodes N tokens over D + P + i cached positions (tg at depth). A depth needs a
KV cache and the decode loop: the cache-less baseline would recompute the whole context inside
every timed step (a D-token prefill per token), so it is refused at depth > 0, like engines
that generate themselves and plugins that replace generation (speculative decoding).

Measured through the one decode loop (engines/decode.generate). The runner drives a session:
warm-up, then timed runs one at a time (interleaved with the group's other variants), then
statistics, throughput and roofline over all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from infer_opt.core.errors import UserError
from infer_opt.core.memory import KVMemory, RunMemory
from infer_opt.core.params import Param, check_all
from infer_opt.core.prompts import prompt_batch
from infer_opt.core.roofline import (
    DEFAULT_RIDGE_FLOP_PER_BYTE,
    DecodeStep,
    arithmetic_intensity,
    bandwidth_method,
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
    depth_tokens: int = 0  # context already in the KV cache when a timed run starts
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
        Param("depth_tokens", int, 0, "context already in the KV cache when a timed run starts",
              minimum=0),
        *SAMPLING_PARAMS,
    )
    # Fields a suite [[group]] gives as a list: one workload per value (batch_sizes x depths).
    EXPANDED: ClassVar[dict[str, str]] = {"batch_size": "batch_sizes", "depth_tokens": "depths"}

    @classmethod
    def group_params(cls) -> tuple[Param, ...]:
        """Keys a suite [[group]] may set: batch_sizes and depths expand to one workload per
        value (their product)."""
        lists = tuple(
            Param(group_key, list, [p.default], f"one workload per value of {p.name}",
                  item=replace(p, name=group_key))
            for p in cls.params for field, group_key in cls.EXPANDED.items() if p.name == field)
        return (*lists, *(p for p in cls.params if p.name not in cls.EXPANDED))

    def validate(self, max_context: int | None = None) -> None:
        check_fields(self, self.params)
        self.validate_sampling()
        total = self.depth_tokens + self.prompt_tokens + self.new_tokens
        if max_context is not None and total > max_context:
            what = f"depth {self.depth_tokens} + " if self.depth_tokens else ""
            raise UserError(
                "workload.depths" if self.depth_tokens else "workload.prompt_tokens",
                f"{what}prompt_tokens + new_tokens = {total} exceeds the model's context of "
                f"{max_context} tokens",
            )

    def unfit_reason(self, stack: Any) -> str | None:
        """Why this stack cannot start at the workload's depth (run/plan.check_fit), or None."""
        engine, settings, variant = stack.engine, stack.settings, stack.variant
        room = engine.max_sequence_tokens(settings)
        total = self.depth_tokens + self.prompt_tokens + self.new_tokens
        if room is not None and total > room:
            return (f"depth + prompt_tokens + new_tokens = {total} do not fit {variant!r}, which "
                    f"holds {room} tokens per sequence; raise its n_ctx")
        if not self.depth_tokens:
            return None
        if not engine.step_api:
            return (f"depth_tokens {self.depth_tokens}: engine {engine.name} ({variant!r}) "
                    "generates itself and cannot start from a prefilled context")
        if not engine.starts_at_depth():
            return (f"depth_tokens {self.depth_tokens}: engine {engine.name} ({variant!r}) "
                    "cannot restore a prefilled context (no crop, no kv/cache_from_kv)")
        if settings.kv_cache == "none":
            return (f"depth_tokens {self.depth_tokens}: {variant!r} has no KV cache, so every "
                    "timed step would recompute the whole context; add kv-cache")
        if settings.decoder is not None:
            by = settings.owners.get("decoder", "a plugin")
            return (f"depth_tokens {self.depth_tokens}: {by!r} in {variant!r} replaces "
                    "whole-sequence generation from the prompt")
        return None

    def row_columns(self) -> dict[str, Any]:
        return {"depth_tokens": self.depth_tokens}

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
        shared = {p.name: values[p.name] for p in cls.params if p.name not in cls.EXPANDED}
        return [cls(batch_size=bs, depth_tokens=d, **shared)
                for bs in values["batch_sizes"] for d in values["depths"]]

    def session(self, ctx: Any) -> StaticSession:
        return StaticSession(self, ctx)


class StaticSession:
    """The static batch on one loaded engine: the same prompts for every run."""

    def __init__(self, w: StaticBatch, ctx: Any) -> None:
        self.w, self.ctx = w, ctx
        # [B, D + P]: windows of the bundled text (seeded random ids without a tokenizer); the
        # first D tokens are the context at depth, the last P the prompt appended to it.
        d = w.depth_tokens
        text = prompt_batch(w.batch_size, d + w.prompt_tokens, ctx.ref.vocab_size,
                            ctx.tokenizer, seed=ctx.cell.seed)
        self.context, self.prompts = text[:, :d], text[:, d:]
        self.clock = clock_for(ctx.cell.device)
        self.runs: list[BatchRun] = []
        self.rounds: list[int] = []
        self.first_call_ms: float | None = None
        self.memory = RunMemory()
        self.kv: KVMemory | None = None
        self._at_depth: Any = None  # (rows holding the context, engine.checkpoint's restore)

    def _start_at_depth(self) -> None:
        """Prefill the context once, before any run and outside every timed region."""
        import time

        from infer_opt.engines.decode import prefill_context

        w, engine = self.w, self.ctx.engine
        t0 = time.perf_counter()
        with engine.context():
            rows = prefill_context(engine, self.context,
                                   w.depth_tokens + w.prompt_tokens + w.new_tokens)
        self._at_depth = (rows, engine.checkpoint(rows.cache, w.depth_tokens))
        self.ctx.settings.notes.append(
            f"depth {w.depth_tokens}: context prefilled once in {time.perf_counter() - t0:.1f} s"
            " outside the timed runs and restored before each (not timed)")

    def _generate(self, n: int, memory: RunMemory | None = None) -> BatchRun:
        """One run of n tokens; `memory` measures what it adds (not the context's restore)."""
        from contextlib import nullcontext
        from dataclasses import replace

        from infer_opt.engines.decode import generate, generate_at_depth

        engine = self.ctx.engine
        with engine.context():
            start = None
            if self._at_depth is not None:
                rows, restore = self._at_depth
                start = replace(rows, cache=restore())  # untimed: the clock starts inside
            with memory.measure() if memory is not None else nullcontext():
                if start is None:
                    return generate(engine, self.prompts, n, self.clock)
                return generate_at_depth(engine, start, self.prompts, n, self.clock)

    def warm_up(self) -> None:
        if self.w.depth_tokens:
            self._start_at_depth()
        n = self.w.new_tokens if self.ctx.settings.warmup_full_length else self.w.warmup_tokens
        for i in range(self.w.warmup_runs):
            warm = self._generate(n)
            if i == 0:
                self.first_call_ms = warm.ttft_s * 1e3  # cold: lazy init, allocator, kernels
        self.ctx.settings.counters.clear()  # what plugins counted in the warm-up is not measured

    def run_once(self, round_index: int) -> float:
        run = self._generate(self.w.new_tokens, self.memory)
        if self.kv is None and run.cache is not None:
            # Slots cached at the end: the context, the prompt and every new token but the last.
            self.kv = self.ctx.engine.kv_memory(run.cache, self.w.depth_tokens
                                                + self.w.prompt_tokens + self.w.new_tokens - 1)
        run.cache = None  # the run's KV is freed here, after its memory was read
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
        d = self.w.depth_tokens  # the context read by every step at depth
        step = DecodeStep(facts.weights, b, self.ctx.settings.kv_cache,
                          kv_bytes_per_token=facts.kv_bytes_per_token,
                          kv_element_bytes=facts.kv_element_bytes,
                          query_groups=facts.query_groups, allocated_len=d + p + n,
                          mean_context_len=mean_cached_len(d + p, n))
        step_bytes = decode_step_bytes(step)
        row["bytes_per_decode_step_mb"] = round(step_bytes / 2**20, 2)
        row["achieved_gb_per_s"] = round(step_bytes / (row["tpot_ms_p50"] / 1e3) / 1e9, 2)
        row["arithmetic_intensity_flop_per_byte"] = round(arithmetic_intensity(step), 3)
        ridge = DEFAULT_RIDGE_FLOP_PER_BYTE["cuda" if cell.device.startswith("cuda") else "cpu"]
        pct, why = roofline_pct(step, row["tpot_ms_p50"], cell.bandwidth_gb_per_s, ridge)
        if pct is not None:
            row["roofline_pct"] = round(pct, 1)
        if why:  # no percentage, or one above 100% and why
            self.ctx.settings.notes.append(why)
        row["bandwidth_method"] = bandwidth_method(cell.device, cell.threads)

    def _fidelity_at_depth(self, row: dict[str, Any]) -> None:
        from infer_opt.workloads.depth_fidelity import measure

        try:
            measure(self, row)
        except Exception as exc:  # the timings stand; the row says why the columns are empty
            self.ctx.settings.notes.append(f"fidelity at depth failed: {type(exc).__name__}: "
                                           f"{' '.join(str(exc).split())[:200]}")

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
        row.update(self.memory.columns())
        if self.kv is not None:
            row.update(self.kv.columns())
        if self._at_depth is not None:  # untimed, after the runs and their memory readings
            self._fidelity_at_depth(row)
        row["first_call_ms"] = round(self.first_call_ms if self.first_call_ms is not None
                                     else per_run["ttft_ms"][0], 3)
        samples["runs"] = {"round": list(self.rounds), **per_run,
                           "run_added_mb": [round(x, 3) for x in self.memory.added_mb]}
        samples["itl_ms"] = [[x * 1e3 for x in r.itl_s] for r in runs]
        samples["tokens"] = runs[0].tokens.tolist()  # [B, N] greedy ids of the first timed run
        samples["warmup"] = {"runs": self.w.warmup_runs,
                             "new_tokens": self.w.new_tokens
                             if self.ctx.settings.warmup_full_length else self.w.warmup_tokens}
