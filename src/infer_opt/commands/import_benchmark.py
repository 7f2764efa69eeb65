from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("json", help="a pytest-benchmark JSON file (.benchmarks/<machine>/NNNN_*.json)")
    p.add_argument("--out", default="results", help="directory for the CSV and samples")


def main(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from infer_opt.core.errors import UserError
    from infer_opt.tools.benchjson import convert

    path = Path(args.json)
    if not path.is_file():
        raise UserError("json", f"file {str(path)!r} not found")
    out = convert(path, Path(args.out))
    print(f"results: {out}", file=sys.stderr)
    return 0
