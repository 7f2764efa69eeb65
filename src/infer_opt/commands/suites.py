"""`infer-opt suites`: the suites shipped with the package, with their cell counts."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--show", metavar="NAME", default=None,
                   help="print one suite's TOML (a shipped name or a .toml path), once it loads")


def main(args: argparse.Namespace) -> int:
    from infer_opt.run.suite import load_suite, named_suites, suite_text

    suites = named_suites()
    if args.show is not None:
        load_suite(args.show)  # a one-line error for an unknown name or a bad file
        text = suite_text(args.show)[1].decode("utf-8")  # the same file load_suite read
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    width = max(len(n) for n in suites)
    print(f"{'suite'.ljust(width)}  cells  description")
    for name in sorted(suites):
        suite = load_suite(name)
        print(f"{name.ljust(width)}  {suite.cell_count:5d}  {suite.description}")
    print("(run one: infer-opt run --suite NAME; or pass a path to your own .toml)")
    return 0
