"""An optimization as a plugin: what it declares and what it does.

A plugin is a class with a `name`, a `summary`, declarations (the engines it works on, what it
needs, its parameters and the metric columns it fills) and `apply(settings)`, which edits the
variant's `Settings`. It is registered under the entry-point group `infer_opt.plugins`; the
built-in plugins register exactly like third-party ones (README, "Writing a plugin").
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, ClassVar

from infer_opt.core import registry
from infer_opt.core.params import Param, check_all
from infer_opt.core.settings import Settings
from infer_opt.core.weights import Kind, support_for


@dataclass(frozen=True)
class Metric:
    """A row column a plugin fills through `settings.metrics[name]`. The unit is in the name
    (`compile_s`, `acceptance_rate_pct`); `better` ('lower', 'higher' or None for "shown, never
    gated") tells `compare` which way is a regression. The optional fields fill the same column
    table as the core columns (format/columns.Column): `unit` (default: read from the name),
    `timed` (one value per timed run in the samples file, so compare needs enough runs and
    resamples them), `gated` (judged by compare's default gate, not only on request).
    `infer-opt plugins` prints each one with its unit, direction and `help`."""

    name: str
    better: str | None
    help: str
    unit: str = ""
    timed: bool = False
    gated: bool = False


class Plugin:
    """Base class for an optimization. Subclasses set the class attributes and `apply`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # Engines this optimization really acts on (registered engine names: torch, ort, ...);
    # None: every engine that declares support for `weight_kind` (Engine.weight_quant), so a new
    # engine joins the plugin by declaring it, without editing the plugin.
    engines: ClassVar[tuple[str, ...] | None] = ("torch",)
    # The weight quantization (bits, activations, source) the plugin sets (core/weights.py).
    weight_kind: ClassVar[Kind | None] = None
    # Optional packages (import names) and hardware; missing ones make the row 'skipped' with the
    # reason, never a failure: the hardware may simply not be here.
    requires_packages: ClassVar[tuple[str, ...]] = ()
    requires_cuda: ClassVar[bool] = False
    # What the whole stack must end up with for this plugin to mean anything (empty = any);
    # a stack that contradicts it is refused before anything runs.
    needs_kv_cache: ClassVar[tuple[str, ...]] = ()
    needs_dtype: ClassVar[tuple[str, ...]] = ()
    # Largest static batch it can serve (speculative decoding verifies one sequence): a larger
    # batch_size in a suite is refused before anything runs. None = any.
    max_batch_size: ClassVar[int | None] = None
    # Typed parameters, given in a variant as `name[key=value,key=value]`.
    params: ClassVar[tuple[Param, ...]] = ()
    # Row columns this plugin fills (settings.metrics); they join the CSV's schema.
    metrics: ClassVar[tuple[Metric, ...]] = ()

    def __init__(self, **values: Any) -> None:
        # Checked against `params`; a bad key or value is a one-line error naming the plugin
        # (core/stack.build_stack adds the variant it was written in).
        self.values = check_all(self.params, values, f"plugin {self.name}")

    @classmethod
    def works_on(cls, engine: Any) -> bool:
        """Whether the plugin acts on this engine class (engines/base.Engine subclass)."""
        if cls.engines is not None:
            return engine.name in cls.engines
        return (cls.weight_kind is not None
                and support_for(engine.weight_quant, cls.weight_kind) is not None)

    @classmethod
    def engine_names(cls) -> tuple[str, ...]:
        """The registered engines it works on (declared, or derived from the engines')."""
        if cls.engines is not None:
            return cls.engines
        return tuple(n for n, e in registry.load_all("engine").items() if cls.works_on(e))

    def unavailable_reason(self, settings: Settings) -> str | None:
        """Why this plugin cannot run here (missing CUDA or package), or None when it can."""
        if self.requires_cuda and not settings.device.startswith("cuda"):
            return f"needs CUDA (device is {settings.device})"
        return missing_package(self.requires_packages)

    def check_model(self, config: dict[str, Any]) -> str | None:
        """Why this plugin's values cannot fit the model (its config.json as a dict: layers,
        hidden size, vocab, context), or None. Called once the model is resolved and before any
        worker starts, so `prune-layers[n=99]` on a 2-layer model is one line, not a traceback
        after loading. Plugins that depend on the model's shape override it."""
        return None

    def apply(self, settings: Settings) -> None:
        raise NotImplementedError


def missing_package(packages: tuple[str, ...]) -> str | None:
    for pkg in packages:
        if importlib.util.find_spec(pkg) is None:
            return f"package '{pkg}' is not installed"
    return None
