"""`infer-opt plugins`: every registered engine and optimization, whether it runs here, and
which distribution provides it. A name that cannot be used (its import fails, or two
distributions register it) is listed as unavailable with the reason; the rest still work."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="device to check availability for")


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

    def source(kind: str, name: str) -> str:
        src = registry.source(kind, name)
        return "" if src.startswith(registry.BUILTIN + " ") else f"  (from {src})"

    print(f"{'engine'.ljust(width)}  here  summary")
    for name, cls in engines.items():
        reason = cls.unavailable_reason(Settings(device=device, engine=name))
        extra = f"  [{reason}]" if reason else ""
        print(f"{name.ljust(width)}  {'no' if reason else 'yes':4}  {cls.summary}"
              f"{source('engine', name)}{extra}")
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
        params = "".join(f"\n{''.ljust(width + 8)}  [{p.describe()}]" for p in cls.params)
        print(f"{name.ljust(width)}  {'no' if reason else 'yes':4}  "
              f"{','.join(works):15}  {cls.summary}{source('plugin', name)}{extra}{params}")
    for name, reason in broken["plugin"].items():
        print(f"{name.ljust(width)}  no    {'?':15}  [unavailable: {reason}]")
    print(f"(device: {device}; a variant is [engine+]plugin+plugin..., e.g. ort+int8-dynamic)")
    return 0
