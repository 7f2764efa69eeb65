from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("csv", help="a results CSV, or a directory (its newest run is reported)")
    p.add_argument("--reference", default="baseline",
                   help="variant speedups and fidelity are measured against")
    p.add_argument("--point-ratios", action="store_true",
                   help="report results whose samples file is missing or corrupt, or whose "
                        "timed cells are NaN or negative, instead of refusing them (exit 2): "
                        "the bad cells are read as empty and listed as notes")


def main(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from infer_opt.core.errors import UserError
    from infer_opt.results.report import newest_csv, write_report

    path = Path(args.csv)
    if path.is_dir():
        path = newest_csv(path)
    elif not path.is_file():
        raise UserError("csv", f"file or directory {str(path)!r} not found")
    out = write_report(path, args.reference, point_ratios=args.point_ratios)
    print(f"report: {out}", file=sys.stderr)
    return 0
