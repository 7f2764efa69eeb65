"""Optimizations as plugins, and the settings they change.

A variant is a stack of plugin names joined with '+', e.g. `kv-cache+sdpa+bf16`. Each plugin
edits a `Settings` object in order; the backend reads only `Settings`, never a plugin name.

Plugins are found through the entry-point group `infer_opt.plugins`, so a built-in plugin and a
third-party package register the same way (see README, "Writing a plugin").
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

from infer_opt.core.errors import UserError

ENTRY_POINT_GROUP = "infer_opt.plugins"

# The pinned baseline: fp32, eager attention, no KV cache (every step recomputes the whole
# sequence), batch 1 (a workload parameter). Nothing is left to a library default.
BASELINE_DTYPE = "float32"
BASELINE_ATTENTION = "eager"
BASELINE_KV_CACHE = "none"

KV_CACHE_KINDS = ("none", "dynamic", "static")
DTYPES = ("float32", "float16", "bfloat16")

# A post-load model edit (quantize, compile, ...): (model, settings) -> model.
ModelTransform = Callable[[Any, "Settings"], Any]
# Wraps the backend's single forward step: step(**inputs) -> logits.
StepWrapper = Callable[[Callable[..., Any], "Settings"], Callable[..., Any]]


@dataclass
class Settings:
    """Everything a backend needs to know about a variant. Plugins edit it, in order."""

    device: str = "cpu"
    backend: str = "torch"
    dtype: str = BASELINE_DTYPE
    attn_implementation: str = BASELINE_ATTENTION
    kv_cache: str = BASELINE_KV_CACHE
    # Extra keyword arguments for `from_pretrained` (e.g. quantization_config).
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    model_transforms: list[ModelTransform] = field(default_factory=list)
    step_wrappers: list[StepWrapper] = field(default_factory=list)
    # Context managers entered around every timed request (e.g. a forced SDPA backend).
    contexts: list[Callable[[], AbstractContextManager[Any]]] = field(default_factory=list)
    # Free-form options for backends other than torch (engine flags and the like).
    options: dict[str, Any] = field(default_factory=dict)
    # Human-readable remarks that end up in the row's `notes` column.
    notes: list[str] = field(default_factory=list)
    # Numbers a plugin measures itself (e.g. compile_s), copied to the row's column of the same
    # name once the workload is measured.
    metrics: dict[str, float] = field(default_factory=dict)
    # Which plugin set which field, to refuse contradictory stacks.
    _owners: dict[str, str] = field(default_factory=dict, repr=False)

    def set(self, name: str, value: Any, by: str) -> None:
        """Set a scalar field, refusing a second plugin that wants another value."""
        owner = self._owners.get(name)
        if owner is not None and owner != by and getattr(self, name) != value:
            raise UserError(
                "variant",
                f"plugins '{owner}' and '{by}' both set {name} "
                f"({getattr(self, name)!r} vs {value!r}); keep one of them",
            )
        setattr(self, name, value)
        self._owners[name] = by


class Plugin:
    """Base class for an optimization. Subclasses set `name`, `summary` and `apply`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # Import names of optional packages this plugin needs.
    requires_packages: ClassVar[tuple[str, ...]] = ()
    requires_cuda: ClassVar[bool] = False

    def unavailable_reason(self, device: str) -> str | None:
        """Why this plugin cannot run on `device` here, or None when it can."""
        if self.requires_cuda and not device.startswith("cuda"):
            return f"needs CUDA (device is {device})"
        for pkg in self.requires_packages:
            if importlib.util.find_spec(pkg) is None:
                return f"package '{pkg}' is not installed"
        return None

    def apply(self, settings: Settings) -> None:
        raise NotImplementedError


def discover() -> dict[str, type[Plugin]]:
    """All plugins registered under the entry-point group, by name."""
    found: dict[str, type[Plugin]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue  # first distribution on sys.path wins, like import
        found[ep.name] = ep.load()
    return found


def parse_variant(variant: str, known: dict[str, type[Plugin]] | None = None) -> list[str]:
    """'kv-cache+sdpa' -> ['kv-cache', 'sdpa'], checking every name exists."""
    known = discover() if known is None else known
    names = [part.strip() for part in variant.split("+")]
    if not variant.strip() or any(not n for n in names):
        raise UserError("variant", f"empty plugin name in {variant!r}; use names joined with '+'")
    for n in names:
        if n not in known:
            raise UserError(
                "variant", f"unknown plugin {n!r} in {variant!r}; known: {', '.join(sorted(known))}"
            )
    if len(set(names)) != len(names):
        raise UserError("variant", f"plugin repeated in {variant!r}")
    return names


def build_settings(names: list[str], device: str, known: dict[str, type[Plugin]] | None = None
                   ) -> tuple[Settings, str | None]:
    """Apply plugins in order. Returns settings and the first unavailability reason, if any."""
    known = discover() if known is None else known
    settings = Settings(device=device)
    for n in names:
        plugin = known[n]()
        reason = plugin.unavailable_reason(device)
        if reason is not None:
            return settings, f"{n}: {reason}"
        plugin.apply(settings)
    return settings, None


def iter_plugins() -> Iterator[tuple[str, type[Plugin]]]:
    yield from sorted(discover().items())
