from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("csv", help="a results CSV")
    p.add_argument("--reference", default="baseline", help="variant to compare against")
    p.add_argument("--also", action="append", default=[], metavar="VARIANT",
                   help="another variant to divide by in the speedup-vs-fidelity section "
                        "(e.g. kv-cache); repeatable")
    p.add_argument("--point-ratios", action="store_true",
                   help="read results whose samples file is missing or corrupt, or whose timed "
                        "cells are NaN or negative, instead of refusing them (exit 2): the bad "
                        "cells are read as empty, timed metrics use point values, and each "
                        "problem is listed as a note")


def main(args: argparse.Namespace) -> int:
    from infer_opt.results.table import render

    # render reads through format.io.read_results: a bad file is one line (exit 2), no table.
    print(render(Path(args.csv), args.reference, args.also, point_ratios=args.point_ratios))
    return 0
