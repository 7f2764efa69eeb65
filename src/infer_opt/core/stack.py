"""A variant string, parsed and validated as a whole before any cell runs.

Grammar: parts joined with '+'; each part is a registered engine or plugin name, optionally
with typed parameters in brackets:

    kv-cache+sdpa+bf16                  torch engine (the default), three optimizations
    ort+int8-dynamic                    ONNX Runtime engine, its dynamic int8 quantization
    vllm[enable_prefix_caching=true]    an engine with one of its typed options
    kv-cache+prune-magnitude[sparsity=0.5]

At most one engine per variant. The stack is refused (one line, exit 2, nothing written) when
a name or parameter is unknown, when two plugins disagree on a field, when a plugin does not
work on the engine, writes a field directly or changes nothing the engine reads, when the
engine does not run the weight quantization asked for (core/weights.py), when the final
settings contradict what a plugin needs, or when they use a setting the engine would ignore: a row must never be named for an optimization that did not run.
A stack that is valid but cannot run on this machine (no CUDA, a missing package) is kept: its
rows are `skipped` with the reason. A plugin whose own code raises while the stack is built
(anything but a UserError from its `__init__` or `apply`: a bug in the plugin, not bad input)
raises PluginFailed; a run (`run_stack`) records that variant's rows as `failed` with the reason
and measures the others.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from typing import Any

from infer_opt.core import registry
from infer_opt.core.errors import UserError
from infer_opt.core.params import check_all, parse_value
from infer_opt.core.plugin import Metric, Plugin
from infer_opt.core.settings import Settings
from infer_opt.core.weights import refusal

DEFAULT_ENGINE = "torch"
SUITE = "suite"  # the owner of an engine option a suite's header set (build_stack)
PART = re.compile(r"^([A-Za-z0-9][\w.:-]*)(?:\[([^\[\]]*)\])?$")


@dataclass
class Stack:
    variant: str
    engine: Any  # the engine class (engines/base.Engine subclass)
    plugins: list[Plugin]
    settings: Settings
    unavailable: str | None  # why it cannot run here; its rows are skipped
    # Why a plugin's own code raised while the stack was built, in one line; its rows are
    # failed and nothing is loaded (run_stack). The traceback is for the run's error log.
    failed: str | None = None
    failed_traceback: str = ""

    @property
    def metrics(self) -> tuple[Metric, ...]:
        out: list[Metric] = list(getattr(self.engine, "metrics", ()))
        for p in self.plugins:
            out += p.metrics
        return tuple(out)


class PluginFailed(Exception):
    """A plugin's `__init__` or `apply` raised something other than UserError. `stack` stands in
    for the variant (its engine, no plugins, `failed` set) so a run can record failed rows."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack.failed)
        self.stack = stack


def split_variant(variant: str) -> list[tuple[str, dict[str, Any]]]:
    """'kv-cache+prune[sparsity=0.5]' -> [('kv-cache', {}), ('prune', {'sparsity': 0.5})].
    A variant is a row's name, so it is taken exactly as written: whitespace inside it, an
    empty part or value, and a key given twice are refused rather than guessed at."""
    if not isinstance(variant, str) or not variant.strip():
        raise UserError("variant", "empty variant; use plugin names joined with '+'")
    if any(c.isspace() for c in variant):
        raise UserError("variant", f"{variant!r} contains whitespace; write it without spaces, "
                                   "e.g. kv-cache+int4-wo[group=32]")
    parts: list[tuple[str, dict[str, Any]]] = []
    for raw in variant.split("+"):
        m = PART.match(raw)
        if m is None:
            raise UserError("variant", f"malformed part {raw!r} in {variant!r}; expected NAME or "
                                       "NAME[key=value,...] joined with '+'")
        params: dict[str, Any] = {}
        for item in (m.group(2).split(",") if m.group(2) else []):
            key, eq, value = item.partition("=")
            if not eq or not key or not value:
                raise UserError("variant", f"parameter {item!r} in {variant!r} is not key=value")
            if key in params:
                raise UserError("variant", f"parameter {key!r} of {m.group(1)!r} is given twice "
                                           f"in {variant!r}")
            params[key] = parse_value(value)
        parts.append((m.group(1), params))
    names = [n for n, _ in parts]
    for n in names:
        if names.count(n) > 1:
            raise UserError("variant", f"{n!r} appears twice in {variant!r}")
    return parts


def variant_sources(variant: str) -> str:
    """The `plugin_sources` cell of a row: which distribution and version provided the engine
    and each plugin of `variant` (core/registry.py), as JSON."""
    parts = [n for n, _ in split_variant(variant)]
    engines = set(registry.all_names("engine"))
    engine = next((n for n in parts if n in engines), DEFAULT_ENGINE)
    return registry.sources_json(engine, [n for n in parts if n not in engines])


def _unknown(name: str, variant: str) -> UserError:
    return UserError("variant", f"unknown plugin {name!r} in {variant!r}; plugins: "
                                f"{', '.join(registry.names('plugin'))}; engines: "
                                f"{', '.join(registry.names('engine'))}")


def build_stack(variant: str, device: str, model: str = "",
                suite_options: dict[str, Any] | None = None) -> Stack:
    """Parse, apply every plugin in order and validate the result (see module docstring).
    `model`: the suite's model name, for plugins that look up weights of their own for it.
    `suite_options`: engine options the suite's header gives as defaults; the engine says
    which this variant takes (Engine.suite_options), owned by SUITE, the variant's own win."""
    parts = split_variant(variant)
    engines = set(registry.all_names("engine"))
    plugins_known = set(registry.all_names("plugin"))
    engine_parts = [(n, p) for n, p in parts if n in engines]
    if len(engine_parts) > 1:
        raise UserError("variant", f"{variant!r} names {len(engine_parts)} engines "
                                   f"({', '.join(n for n, _ in engine_parts)}); use one")
    engine_name, engine_values = engine_parts[0] if engine_parts else (DEFAULT_ENGINE, {})
    engine = registry.load("engine", engine_name)
    settings = Settings(device=device, engine=engine_name, model=model)
    engine.defaults(settings)
    for key, value in check_all(engine.options, engine_values,
                                f"variant {variant}: engine {engine_name}").items():
        if key in engine_values:
            settings.set_option(key, value, by=engine_name)
    for key, value in engine.suite_options(settings, dict(suite_options or {})).items():
        settings.set_option(key, value, by=SUITE)
    # An engine that serves another behind HTTP (engines/http) hosts the variant's plugins:
    # they are checked against the engine inside the server, which gets the rest of the
    # variant as its `stack` option.
    host = registry.load("engine", engine.hosted_engine(settings))
    if host is not engine:
        host.defaults(settings)
        rest = "+".join(raw.strip() for raw, (n, _) in zip(variant.split("+"), parts)
                        if n not in engines)
        if rest:  # an engine option is never an empty string (core/params.py)
            settings.set_option("stack", rest, by=engine_name)
    plugins: list[Plugin] = []
    for name, values in parts:
        if name in engines:
            continue
        if name not in plugins_known:
            raise _unknown(name, variant)
        cls = registry.load("plugin", name)
        try:
            plugin = cls(**values)
        except UserError as exc:  # a bad value: say which variant of the suite holds it
            raise UserError("variant", f"{variant!r}: {exc}") from None
        except Exception as exc:
            raise _plugin_failed(variant, engine, settings, name, "__init__", exc) from exc
        if not plugin.works_on(host):
            works = plugin.engine_names()
            hint = ("" if engine_parts or not works else
                    f" (add one of them, e.g. {works[0]}+{name})")
            raise UserError("variant", f"{name!r} works on engines {', '.join(works) or 'none'}; "
                                       f"{variant!r} runs on {host.name}{hint}")
        _apply(plugin, settings, host.name, variant, engine)
        plugins.append(plugin)
    _check(variant, engine, plugins, settings, host)
    return Stack(variant, engine, plugins, settings, _unavailable(engine, plugins, settings))


def run_stack(variant: str, device: str, model: str = "",
              suite_options: dict[str, Any] | None = None) -> Stack:
    """build_stack for a run: a plugin that raises while its stack is built fails that
    variant's rows (Stack.failed) instead of stopping the whole run with a traceback."""
    try:
        return build_stack(variant, device, model, suite_options)
    except PluginFailed as exc:
        return exc.stack


def _plugin_failed(variant: str, engine: Any, settings: Settings, name: str, where: str,
                   exc: Exception) -> PluginFailed:
    """Called inside the `except` block, so the traceback is the plugin's."""
    text = " ".join(str(exc).split())  # a row's reason is one line
    reason = f"{name}.{where} raised {type(exc).__name__}: {text}"[:500]
    fresh = Settings(device=settings.device, engine=settings.engine, model=settings.model)
    return PluginFailed(Stack(variant, engine, [], fresh, None, reason,
                              traceback.format_exc()))


def _apply(plugin: Plugin, settings: Settings, engine_name: str, variant: str,
           engine: Any) -> None:
    """Apply one plugin under the Settings guards: a field written directly is refused (by
    Settings), and so is a plugin that changes nothing the engine reads and pins nothing, unless
    it cannot run here anyway (a student not built yet: its rows are skipped with the reason)."""
    before = settings.engine_view()
    options = dict(settings.options)
    with settings.applying(plugin.name):
        try:
            plugin.apply(settings)
        except UserError:  # bad input, or a Settings guard: one line, exit 2
            raise
        except Exception as exc:
            raise _plugin_failed(variant, engine, settings, plugin.name, "apply", exc) from exc
    for key, value in settings.options.items():
        if options.get(key) != value and settings.owners.get(f"option {key}") != plugin.name:
            raise UserError("variant", f"plugin {plugin.name!r} writes settings.options[{key!r}] "
                                       f"directly; use settings.set_option({key!r}, value, "
                                       "by=self.name)")
    if (not settings.changed(before) and plugin.name not in settings.pins.values()
            and plugin.unavailable_reason(settings) is None):  # (else its rows are skipped)
        raise UserError("variant", f"{plugin.name!r} changes nothing engine {engine_name} reads "
                                   f"in {variant!r} (no setting, option, hook or weights it "
                                   "sets differs); drop it, or pin the value it stands for "
                                   "with settings.pin")


def _who(settings: Settings, field: str) -> str:
    owner = settings.owners.get(field)
    return f" (set by {owner!r})" if owner else ""


def _check(variant: str, engine: Any, plugins: list[Plugin], settings: Settings,
           host: Any = None) -> None:
    """What the finished settings must satisfy; each failure is one line naming the conflict.
    `host`: the engine the plugins run on, when `engine` serves it behind HTTP."""
    host = engine if host is None else host
    for p in plugins:
        if p.needs_kv_cache and settings.kv_cache not in p.needs_kv_cache:
            raise UserError("variant", f"{p.name!r} needs kv_cache {' or '.join(p.needs_kv_cache)};"
                                       f" {variant!r} has {settings.kv_cache}"
                                       f"{_who(settings, 'kv_cache')}")
        if p.needs_dtype and settings.dtype not in p.needs_dtype:
            raise UserError("variant", f"{p.name!r} needs dtype {' or '.join(p.needs_dtype)}; "
                                       f"{variant!r} has {settings.dtype}{_who(settings, 'dtype')}")
    for field, allowed in (("dtype", host.dtypes), ("kv_cache", host.kv_caches),
                           ("attn_implementation", host.attn_implementations)):
        value = getattr(settings, field)
        if allowed and value not in allowed:
            raise UserError("variant", f"engine {host.name} runs {field} "
                                       f"{', '.join(allowed)}; {variant!r} sets {value}"
                                       f"{_who(settings, field)}")
        if not allowed and field in settings.owners and settings.owners[field] != host.name:
            raise UserError("variant", f"engine {host.name} chooses its own {field}; "
                                       f"{variant!r} sets it{_who(settings, field)}")
    if settings.weights is not None:
        why = refusal(host.name, host.weight_quant, settings.weights)
        if why is not None:
            raise UserError("variant", f"{variant!r}: {why}{_who(settings, 'weights')}")
    ignored = [h for h in settings.hooks_used() if h not in host.honours]
    if ignored:
        raise UserError("variant", f"engine {host.name} does not apply {ignored[0]}, which "
                                   f"{variant!r} uses; it applies: "
                                   f"{', '.join(sorted(host.honours)) or 'none'}")
    declared = {p.name: p for p in engine.options}
    for key, value in settings.options.items():
        if key not in declared:
            raise UserError("variant", f"engine option {key!r} set by "
                                       f"{settings.owners.get('option ' + key, '?')!r} is not an "
                                       f"option of engine {engine.name}; options: "
                                       f"{', '.join(sorted(declared)) or 'none'}")
        declared[key].check(value, f"variant {variant}: engine {engine.name}")
    why = engine.check_settings(settings)
    if why is not None:
        raise UserError("variant", f"{variant!r} on engine {engine.name}: {why}")


def _unavailable(engine: Any, plugins: list[Plugin], settings: Settings) -> str | None:
    reason = engine.unavailable_reason(settings)
    if reason is not None:
        return f"{engine.name}: {reason}"
    for p in plugins:
        reason = p.unavailable_reason(settings)
        if reason is not None:
            return f"{p.name}: {reason}"
    return None
