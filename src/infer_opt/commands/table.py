from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("csv", help="a results CSV")
    p.add_argument("--reference", default="baseline", help="variant to compare against")


def main(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..table import render

    path = Path(args.csv)
    if not path.is_file():
        raise UserError("csv", f"file {str(path)!r} not found")
    print(render(path, args.reference))
    return 0
