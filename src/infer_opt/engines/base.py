"""What an engine declares and provides.

An engine (torch, ONNX Runtime, vLLM, ...) runs the model; optimizations are plugins applied to
it. Each engine class declares what it can run (dtypes, KV-cache kinds, attention
implementations, which `Settings` hooks it honours, its typed options) so a stack is validated
before any cell runs (core/stack.py), and provides either

- the step API, which the one decode loop (engines/decode.py) drives for static batches, online
  serving policies and speculative decoding: `new_cache`, `step`, `kv`, `cache_from_kv`; or
- `generate` alone, for an engine that schedules requests itself (vLLM): only workloads that do
  not need the step API run on it, and the others are refused up front.

Engines register under the entry-point group `infer_opt.engines`, like plugins.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from infer_opt.core.memory import KVMemory
from infer_opt.core.params import Param
from infer_opt.core.plugin import Metric, missing_package
from infer_opt.core.roofline import WeightBytes
from infer_opt.core.settings import DTYPES, KV_CACHE_KINDS, Settings
from infer_opt.core.timing import Clock
from infer_opt.core.weights import WeightSupport


def environment_python(engine: str, environment: str) -> Path | None:
    """The Python of an engine's own environment: $INFER_OPT_PYTHON_<ENGINE> if set, else
    <environment>/bin/python in the current directory or the checkout this package runs from."""
    override = os.environ.get(f"INFER_OPT_PYTHON_{engine.upper().replace('-', '_')}")
    if override:
        return Path(override) if Path(override).is_file() else None
    checkout = Path(__file__).resolve().parents[3]  # src/infer_opt/engines/base.py -> root
    for root in (Path.cwd(), checkout):
        python = root / environment / "bin" / "python"
        if python.is_file():
            return python
    return None


@functools.lru_cache(maxsize=None)
def environment_reason(engine: str, environment: str, packages: tuple[str, ...]) -> str | None:
    """Why the engine's own environment cannot run it: missing, or lacking a package (probed
    once per process, in that environment's interpreter)."""
    python = environment_python(engine, environment)
    if python is None:
        return (f"needs its own environment {environment} (make setup-{engine}), not found "
                f"here or in $INFER_OPT_PYTHON_{engine.upper().replace('-', '_')}")
    probe = "import importlib.util, sys; sys.exit(next((i for i, p in enumerate(sys.argv[1:], " \
            "1) if importlib.util.find_spec(p) is None), 0))"
    proc = subprocess.run([str(python), "-c", probe, "infer_opt", *packages],
                          capture_output=True, timeout=120)
    if proc.returncode != 0:
        missing = (["infer_opt", *packages][proc.returncode - 1]
                   if 0 < proc.returncode <= len(packages) + 1 else "?")
        return f"package '{missing}' is not installed in {environment} (make setup-{engine})"
    return None


@dataclass
class StepInput:
    """One forward step of the decode loop; every engine's step takes exactly this.

    input_ids       [B, T] int64: the new tokens (the prompt at prefill, one per row when
                    decoding, k + 1 when verifying a draft); without a KV cache, the whole
                    sequence so far (every step recomputes it: the baseline)
    position_ids    [B, T] int64: position of each of those tokens (rows differ under padding)
    attention_mask  [B, L + T] int64, 1 = real token, over the cached slots and the new ones;
                    None when no row is padded (static batches), as the baseline runs
    cache           the engine's KV state for these rows (`Engine.new_cache`), extended in place
                    by the step; None without a KV cache
    logits_to_keep  K: logits are returned for the last K of the T positions only
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    cache: Any = None
    logits_to_keep: int = 1


# A step: StepInput -> logits [B, K, V] on the engine's device.
Step = Callable[[StepInput], torch.Tensor]


@dataclass
class BatchRun:
    """One timed run of a static batch.

    stamps_s[0] is when the first token of every request was ready (TTFT); stamps_s[i] when
    token i was ready. tokens is [batch, new_tokens] int64 on the CPU.
    """

    stamps_s: list[float]
    tokens: torch.Tensor
    # The KV state at the end of the run (decode loop only), for Engine.kv_memory; the
    # workload reads it once after the run's memory is measured, then drops it.
    cache: Any = None

    @property
    def ttft_s(self) -> float:
        return self.stamps_s[0]

    @property
    def e2e_s(self) -> float:
        return self.stamps_s[-1]

    @property
    def itl_s(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps_s, self.stamps_s[1:])]


@dataclass
class ModelFacts:
    """Sizes a row reports and the roofline needs (core/roofline.py)."""

    weight_bytes: int  # all stored weights: quantized data plus scales
    kv_bytes_per_token: float  # per sequence, all layers, K and V; 0 when nothing is cached
    load_s: float
    # What a decode step reads of each weight (lookup-only tables, tied lm_head); None when
    # the engine cannot tell, and then the roofline columns stay empty.
    weights: WeightBytes | None = None
    kv_element_bytes: float = 4  # a quantized cache: data plus scales per value
    query_groups: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class Engine:
    """Base class: declarations, step wrapping and the request context."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    requires_packages: ClassVar[tuple[str, ...]] = ()
    requires_cuda: ClassVar[bool] = False
    # What a stack on this engine may end up with; () = the engine's own, not settable.
    dtypes: ClassVar[tuple[str, ...]] = DTYPES
    kv_caches: ClassVar[tuple[str, ...]] = KV_CACHE_KINDS
    attn_implementations: ClassVar[tuple[str, ...]] = ("eager", "sdpa")
    # Settings hooks (core/settings.HOOKS) this engine applies; plugins using others are refused.
    honours: ClassVar[frozenset[str]] = frozenset({"step_wrappers", "contexts", "decoder"})
    # Weight quantizations it runs (Settings.weights, core/weights.py): plugins that set a kind
    # listed here work on this engine; a value outside what is listed is refused up front.
    weight_quant: ClassVar[tuple[WeightSupport, ...]] = ()
    # Typed engine options (Settings.options), settable as `engine[key=value]` in a variant or
    # by a plugin through `settings.set_option`.
    options: ClassVar[tuple[Param, ...]] = ()
    # Row columns the engine fills through settings.metrics.
    metrics: ClassVar[tuple[Metric, ...]] = ()
    # True: new_cache / step drive the decode loop (static batches, speculative decoding).
    step_api: ClassVar[bool] = True
    # True: kv / cache_from_kv let rows of different lengths share a batch, join and leave it
    # (online serving, a shared prefix); an engine without them serves static batches only.
    row_ops: ClassVar[bool] = True
    # True: `serve_requests(requests, clock, opts)` serves an online workload's requests at
    # their arrival times itself (a server behind HTTP, engines/http) instead of the suite's
    # batching policies driving the step API.
    serves_requests: ClassVar[bool] = False
    # Largest static batch the engine serves (None: any); larger ones are refused up front.
    max_batch_size: ClassVar[int | None] = None
    # An engine that pins its own dependencies lives in a virtual environment of its own (a
    # folder beside the checkout's .venv, e.g. ".venv-llamacpp", made by its make target): its
    # workers run under that environment's Python (run/rounds.py), in the same interleaved
    # rounds as every other variant. None: this interpreter.
    environment: ClassVar[str | None] = None

    facts: ModelFacts
    settings: Settings

    @classmethod
    def defaults(cls, settings: Settings) -> None:
        """Fields the engine fixes before plugins apply (e.g. a KV cache built into a graph)."""

    @classmethod
    def hosted_engine(cls, settings: Settings) -> str:
        """The engine the variant's plugins run on: this one, or, for an engine that serves
        another behind HTTP (engines/http), the one inside the server (its options set)."""
        return cls.name

    @classmethod
    def suite_options(cls, settings: Settings, given: dict[str, Any]) -> dict[str, Any]:
        """Which of a suite's engine-option defaults (`given`, from its header, e.g. a served
        endpoint) this variant takes, given the options it sets itself: none by default."""
        return {}

    @classmethod
    def has_row_ops(cls, settings: Settings) -> bool:
        """Whether rows can join and leave a batch with these settings (`row_ops`, unless a
        setting takes it away, e.g. a KV cache that cannot be copied row by row)."""
        return cls.row_ops

    @classmethod
    def check_settings(cls, settings: Settings) -> str | None:
        """Why the finished settings (every plugin applied) contradict themselves on this
        engine, e.g. two options that exclude each other, or None; the stack is then refused
        before anything runs."""
        return None

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        if cls.requires_cuda and not settings.device.startswith("cuda"):
            return f"needs CUDA (device is {settings.device})"
        if cls.environment is not None:
            return environment_reason(cls.name, cls.environment, cls.requires_packages)
        return missing_package(cls.requires_packages)

    # --- helpers for subclasses ---------------------------------------------------------
    def wrap_step(self, raw: Step) -> Step:
        """The engine's raw forward step with every plugin's step wrapper around it, in order."""
        step = raw
        for wrap in self.settings.step_wrappers:
            step = wrap(step, self.settings)
        return step

    def context(self) -> AbstractContextManager[Any]:
        """Entered around all timed runs and scoring: inference mode and plugins' contexts."""
        stack = ExitStack()
        stack.enter_context(torch.inference_mode())
        for make in self.settings.contexts:
            stack.enter_context(make())
        return stack

    # --- the step API (engines with step_api) -------------------------------------------
    def new_cache(self, batch_size: int, max_len: int) -> Any:
        """Empty KV state for `batch_size` rows of at most `max_len` tokens; None without a
        KV cache (kv_cache = "none")."""
        raise NotImplementedError

    def step(self, inp: StepInput) -> torch.Tensor:
        """One forward step (plugins' step wrappers included): logits [B, K, V]."""
        raise NotImplementedError

    def kv(self, cache: Any, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first `length` cached slots, per layer (keys, values) [B, kv_heads, length, D]."""
        raise NotImplementedError

    def cache_from_kv(self, kv: list[tuple[torch.Tensor, torch.Tensor]], max_len: int) -> Any:
        """A cache holding `kv` (per layer [B, kv_heads, L, D]) with room for `max_len` slots."""
        raise NotImplementedError

    def crop(self, cache: Any, length: int) -> Any:
        """The cache cut back to its first `length` slots (speculative decoding drops rejected
        draft tokens); the default rebuilds it through kv / cache_from_kv."""
        kv = self.kv(cache, length)
        return self.cache_from_kv(kv, max(length, 1))

    def checkpoint(self, cache: Any, length: int) -> Callable[[], Any]:
        """Start at depth: `cache` holds a long context of `length` slots, prefilled once;
        the returned function gives, before every run, a cache holding exactly those slots,
        ready to extend. The default crops the later slots off in place (a cache whose crop
        cannot forget slots overrides it)."""
        return lambda: self.crop(cache, length)

    @classmethod
    def max_sequence_tokens(cls, settings: Settings) -> int | None:
        """The longest sequence (context + prompt + new tokens) the engine's options leave
        room for, or None when only the model's context limits it."""
        return None

    @classmethod
    def starts_at_depth(cls) -> bool:
        """Whether checkpoint can restore a prefilled context: an engine's own checkpoint or
        crop, or the default crop through kv / cache_from_kv (row_ops)."""
        return (cls.step_api and (cls.row_ops or cls.checkpoint is not Engine.checkpoint
                                  or cls.crop is not Engine.crop))

    def kv_memory(self, cache: Any, length: int) -> KVMemory | None:
        """The cache as stored after `length` slots per row (core/memory.KVMemory); None when
        the engine cannot tell (no cache)."""
        return None

    # --- engines that schedule requests themselves ----------------------------------------
    def generate(self, prompts: torch.Tensor, new_tokens: int, clock: Clock) -> BatchRun:
        """Greedy-generate exactly new_tokens for prompts [B, P]; only for step_api = False."""
        raise NotImplementedError

    # --- fidelity -------------------------------------------------------------------------
    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-token logits, untimed: ids [B, T] -> float32 CPU [B, T, V]."""
        raise NotImplementedError
