from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("csv", help="a results CSV")
    p.add_argument("--reference", default="baseline", help="variant to compare against")
    p.add_argument("--also", action="append", default=[], metavar="VARIANT",
                   help="another variant to divide by in the speedup-vs-fidelity section "
                        "(e.g. kv-cache); repeatable")


def main(args: argparse.Namespace) -> int:
    from infer_opt.core.errors import UserError
    from infer_opt.results.table import render

    path = Path(args.csv)
    if not path.is_file():
        raise UserError("csv", f"file {str(path)!r} not found")
    print(render(path, args.reference, args.also))
    return 0
