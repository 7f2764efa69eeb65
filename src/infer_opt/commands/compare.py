from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("csv", nargs="+", metavar="CSV",
                   help="OLD.csv NEW.csv, or one RUN.csv with --baseline-variant")
    p.add_argument("--baseline-variant", default=None, metavar="VARIANT",
                   help="compare every variant against this one: inside one run, or NEW's rows "
                        "against OLD's rows of this variant")
    p.add_argument("--fail-above", action="append", default=[], metavar="[METRIC=]PERCENT",
                   help="regression threshold, default 10%%; METRIC=PERCENT (glob allowed, e.g. "
                        "'*_p99=20%%') sets or gates one metric; repeatable")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                   help="bootstrap resamples per metric (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--all", action="store_true",
                   help="show every compared metric, not only the main ones and flagged ones")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from infer_opt.core.errors import UserError
    from infer_opt.results.compare import (
        compare_runs,
        compare_to_variant,
        read_run,
        render,
    )

    if args.bootstrap < 100:
        raise UserError("--bootstrap", f"must be an integer >= 100, got {args.bootstrap}")
    paths = [Path(p) for p in args.csv]
    if len(paths) not in (1, 2) or (len(paths) == 1 and args.baseline_variant is None):
        raise UserError("csv", f"expected OLD.csv NEW.csv, or RUN.csv --baseline-variant VARIANT; "
                               f"got {len(paths)} file(s)")
    runs = [read_run(p) for p in paths]
    if args.baseline_variant is not None:
        # One file: its variants vs one of them. Two: NEW's rows vs OLD's rows of that variant.
        cmp = compare_to_variant(runs[-1], args.baseline_variant, args.fail_above,
                                 args.bootstrap, args.seed, base_run=runs[0])
        print(render(cmp, args.all, baseline_label=args.baseline_variant))
    else:
        cmp = compare_runs(runs[0], runs[1], args.fail_above, args.bootstrap, args.seed)
        print(render(cmp, args.all))
    return 1 if cmp.regressed else 0
