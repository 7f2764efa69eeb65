"""`infer-opt plugins`: every registered engine and optimization, whether it runs here, and
which distribution provides it, each with its parameters (engine options) and the metric columns
it fills: unit, better direction and what it counts (core/plugin.Metric), the one place a
column's `help` is shown. A name that cannot be used (its import fails, or two distributions
register it) is listed as unavailable with the reason; the rest still work."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="device to check availability for")


def metric_line(m: Any) -> str:
    """`name (unit, lower is better): help`, the unit as every reader resolves it (declared, else
    the name's suffix: format/columns.from_metric); the parentheses only when there is one."""
    from infer_opt.format.columns import from_metric

    unit = from_metric(m.name, m.better, m.unit).unit
    traits = [t for t in (unit, f"{m.better} is better" if m.better else "") if t]
    head = f"{m.name} ({', '.join(traits)})" if traits else m.name
    return f"metric {head}: {m.help}"


def details(params: Sequence[Any], metrics: Sequence[Any], indent: int) -> str:
    """The lines under a name: `[param=default (choices): help]`, then `metric ...`."""
    pad = "\n" + " " * indent
    return ("".join(f"{pad}[{p.describe()}]" for p in params)
            + "".join(pad + metric_line(m) for m in metrics))


def main(args: argparse.Namespace) -> int:
    from infer_opt.core import registry
    from infer_opt.core.settings import Settings
    from infer_opt.run.plan import resolve_device

    device = resolve_device(args.device)
    engines = registry.load_all("engine")
    plugins = registry.load_all("plugin")
    broken = {kind: registry.problems(kind) for kind in ("engine", "plugin")}
    every = [*engines, *plugins, *broken["engine"], *broken["plugin"]]
    width = max(len(n) for n in every)
    indent = width + 10  # under the summary of a plugin: name, "here", engines columns

    def source(kind: str, name: str) -> str:
        src = registry.source(kind, name)
        return "" if src.startswith(registry.BUILTIN + " ") else f"  (from {src})"

    print(f"{'engine'.ljust(width)}  here  summary")
    for name, cls in engines.items():
        reason = cls.unavailable_reason(Settings(device=device, engine=name))
        extra = f"  [{reason}]" if reason else ""
        print(f"{name.ljust(width)}  {'no' if reason else 'yes':4}  {cls.summary}"
              f"{source('engine', name)}{extra}{details(cls.options, cls.metrics, indent)}")
    for name, reason in broken["engine"].items():
        print(f"{name.ljust(width)}  no    [unavailable: {reason}]")
    print()
    print(f"{'plugin'.ljust(width)}  here  engines          summary")
    for name, cls in plugins.items():
        # Declared, or derived from the engines' declarations (a weight quantization).
        works = cls.engine_names()
        reason = cls().unavailable_reason(Settings(device=device,
                                                   engine=works[0] if works else "torch"))
        extra = f"  [{reason}]" if reason else ""
        print(f"{name.ljust(width)}  {'no' if reason else 'yes':4}  "
              f"{','.join(works):15}  {cls.summary}{source('plugin', name)}{extra}"
              f"{details(cls.params, cls.metrics, indent)}")
    for name, reason in broken["plugin"].items():
        print(f"{name.ljust(width)}  no    {'?':15}  [unavailable: {reason}]")
    print(f"(device: {device}; a variant is [engine+]plugin+plugin..., e.g. ort+int8-dynamic, "
          "kv-cache+int4-wo[group=64]; [key=default (choices): help] are its parameters, "
          "metric lines the columns it adds to a row)")
    return 0
