"""Everything an engine needs to know about a variant, as plugins leave it.

A variant is an engine plus a stack of optimizations (`ort+int8-dynamic`, `kv-cache+sdpa+bf16`
on the default torch engine). Each plugin edits one `Settings` in order; the engine reads only
`Settings`, never a plugin's name. Which engine honours which field is declared by the engine
(`Engine.honours`), and a stack whose settings use a field the engine would ignore is refused
before anything runs (core/stack.py): a row is never named for an optimization that did not run.

Two guards keep plugins honest (core/stack.py applies them): while a plugin applies, writing a
field directly (`settings.dtype = ...`) is refused, since a field no plugin claimed would pass
every check and could be silently ignored; and a plugin whose `apply` changes nothing an engine
reads (`ENGINE_READS`) and pins nothing (`pin`) is refused, since its row would be named for an
optimization that did not run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from infer_opt.core.errors import UserError
from infer_opt.core.weights import WeightQuant

# The pinned baseline: fp32, eager attention, no KV cache (every step recomputes the whole
# sequence), batch 1 (a workload parameter). Nothing is left to a library default.
BASELINE_DTYPE = "float32"
BASELINE_ATTENTION = "eager"
BASELINE_KV_CACHE = "none"

KV_CACHE_KINDS = ("none", "dynamic", "static")
DTYPES = ("float32", "float16", "bfloat16")

# Settings fields an engine may or may not honour (Engine.honours); a non-empty one on an engine
# that does not honour it refuses the stack.
HOOKS = ("model_path", "load_kwargs", "model_transforms", "step_wrappers", "contexts",
         "decoder")
# What an engine (or the workload running it) reads: a plugin must change one of these, or pin
# one explicitly (`Settings.pin`), or it is refused. Notes, metrics and claims alone run nothing.
ENGINE_READS = ("model_path", "dtype", "attn_implementation", "kv_cache", "weights",
                "load_kwargs", "model_transforms", "step_wrappers", "contexts", "options",
                "decoder", "warmup_full_length")

# A post-load model edit (quantize, prune, ...): (model, settings) -> model.
ModelTransform = Callable[[Any, "Settings"], Any]
# Wraps the engine's forward step. A step takes one `StepInput` (engines/base.py) and returns
# logits [B, K, V]; a wrapper gets (step, settings) and returns a new step.
StepWrapper = Callable[[Callable[[Any], Any], "Settings"], Callable[[Any], Any]]
# Replaces plain greedy generation of a static batch (speculative decoding):
# (engine, prompts [B, P], new_tokens, clock) -> BatchRun, driving engine.step.
Decoder = Callable[[Any, Any, int, Any], Any]


@dataclass
class Settings:
    """What a variant runs with. Plugins edit it, in order, through `set` and `set_option` for
    scalars (so two plugins that disagree are refused) and by appending to the lists."""

    device: str = "cpu"
    engine: str = "torch"
    # The suite's model (its name, as in the row); plugins that bring weights of their own
    # (a distilled student) look them up for it. "" when a stack is built without a model.
    model: str = ""
    # Weights to load instead of the model's own (a directory); None: the model's.
    model_path: str | None = None
    dtype: str = BASELINE_DTYPE
    attn_implementation: str = BASELINE_ATTENTION
    kv_cache: str = BASELINE_KV_CACHE
    # Weight quantization (core/weights.py): what the weights become; each engine declares which
    # ones it runs (Engine.weight_quant) and how. None: the model's own weights.
    weights: WeightQuant | None = None
    # Extra keyword arguments for `from_pretrained` (e.g. quantization_config).
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    model_transforms: list[ModelTransform] = field(default_factory=list)
    step_wrappers: list[StepWrapper] = field(default_factory=list)
    # Context managers entered around every timed request (e.g. a forced SDPA backend).
    contexts: list[Callable[[], AbstractContextManager[Any]]] = field(default_factory=list)
    # Engine options, typed by the engine (Engine.options): checked before any cell runs.
    options: dict[str, Any] = field(default_factory=dict)
    # A decoding strategy that replaces plain greedy steps in `decode.generate` (None: plain).
    decoder: Decoder | None = None
    # Human-readable remarks that end up in the row's `notes` column.
    notes: list[str] = field(default_factory=list)
    # Numbers a plugin measures itself (e.g. compile_s); each must be declared in the plugin's
    # `metrics`, and lands in the row's column of the same name.
    metrics: dict[str, float] = field(default_factory=dict)
    # Running counts a plugin keeps while requests run (tokens drafted, accepted, ...); workloads
    # clear them after the warm-up, so metrics derived from them cover the timed runs only.
    counters: dict[str, float] = field(default_factory=dict)
    # A plugin whose cost depends on shapes (compile) asks for warm-up runs of full length.
    warmup_full_length: bool = False
    # Which plugin set which field, to refuse contradictory stacks.
    owners: dict[str, str] = field(default_factory=dict, repr=False)
    # Fields a plugin pinned to the value they already had (the baseline), by plugin name.
    pins: dict[str, str] = field(default_factory=dict, repr=False)
    # The plugin applying now (`applying`); while set, fields are written through `set` only.
    _applying: ClassVar[str | None] = None

    def __setattr__(self, name: str, value: Any) -> None:
        by = self.__dict__.get("_applying")
        if by is not None and name in FIELDS:
            raise UserError("variant", f"plugin {by!r} writes settings.{name} directly; use "
                                       f"settings.set({name!r}, value, by=self.name)")
        object.__setattr__(self, name, value)

    @contextmanager
    def applying(self, by: str) -> Iterator[None]:
        """While plugin `by` applies: direct writes of a field are refused."""
        object.__setattr__(self, "_applying", by)
        try:
            yield
        finally:
            object.__setattr__(self, "_applying", None)

    def set(self, name: str, value: Any, by: str) -> None:
        """Set a scalar field, refusing a second plugin that wants another value."""
        if name not in FIELDS:
            raise UserError("variant", f"plugin {by!r} sets unknown setting {name!r}; settings: "
                                       f"{', '.join(ENGINE_READS)}")
        self._claim(name, getattr(self, name), value, by)
        object.__setattr__(self, name, value)

    def pin(self, name: str, value: Any, by: str) -> None:
        """Set a field and claim it even where the value is already the engine's default (the
        baseline pins fp32, eager attention, no KV cache: a library default that moves must
        not move it). A plugin that pins counts as doing something."""
        self.set(name, value, by)
        self.pins[name] = by

    def set_option(self, name: str, value: Any, by: str) -> None:
        """Set an engine option (typed by the engine), refusing a second plugin that wants
        another value."""
        self._claim(f"option {name}", self.options.get(name), value, by)
        self.options[name] = value

    def exclusive(self, what: str, by: str) -> None:
        """Claim something only one plugin of a stack may do (e.g. compile the decode step)."""
        self._claim(what, self.owners.get(what), by, by)

    def _claim(self, name: str, current: Any, value: Any, by: str) -> None:
        owner = self.owners.get(name)
        if owner is not None and owner != by and current != value:
            raise UserError("variant", f"'{owner}' and '{by}' both set {name} ({current!r} vs "
                                       f"{value!r}); keep one of them")
        self.owners[name] = by

    def hooks_used(self) -> list[str]:
        return [h for h in HOOKS if getattr(self, h) not in (None, [], {})]

    def engine_view(self) -> tuple[Any, ...]:
        """What an engine reads, as a snapshot to compare before and after a plugin applies
        (lists and dicts copied; their items compared by identity or value)."""
        out: list[Any] = []
        for name in ENGINE_READS:
            value = getattr(self, name)
            out.append(list(value) if isinstance(value, list) else
                       dict(value) if isinstance(value, dict) else value)
        return tuple(out)

    def changed(self, before: tuple[Any, ...]) -> list[str]:
        """The ENGINE_READS fields that differ from the snapshot `before`."""
        return [n for n, a, b in zip(ENGINE_READS, before, self.engine_view()) if a != b]


FIELDS = frozenset(f.name for f in fields(Settings))
