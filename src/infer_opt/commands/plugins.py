from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="device to check availability for")


def main(args: argparse.Namespace) -> int:
    from infer_opt.core.plugin import iter_plugins
    from infer_opt.run.runner import resolve_device

    device = resolve_device(args.device)
    rows = []
    for name, cls in iter_plugins():
        reason = cls().unavailable_reason(device)
        rows.append((name, "yes" if reason is None else "no", reason or "", cls.summary))
    width = max(len(r[0]) for r in rows)
    print(f"{'plugin'.ljust(width)}  here  {'summary'}")
    for name, ok, reason, summary in rows:
        extra = f"  [{reason}]" if reason else ""
        print(f"{name.ljust(width)}  {ok.ljust(4)}  {summary}{extra}")
    print(f"(device: {device})")
    return 0
