from __future__ import annotations

import argparse

EPILOG = """\
modes:
  OLD.csv NEW.csv                    rows joined on their identity; timed metrics normalized
                                     by a reference variant found in both runs (baseline, else
                                     kv-cache, or --reference-variant), so a uniformly slower
                                     machine shows as drift, not as a regression of every row
  OLD.csv NEW.csv --absolute         raw new/old ratios (drift is still reported)
  RUN.csv --baseline-variant B       every variant of the run against B, paired by round
  RUN.csv --map 'X+p=X'              a stack against its unmodified base, within the run
  OLD.csv NEW.csv --map 'X+p=X'      NEW's X+p rows against OLD's X rows (repeatable)

verdicts: a gated metric is a REGRESSION only when its whole interval is worse than the
threshold and the absolute change exceeds the column's floor; intervals of one comparison are
simultaneous (Bonferroni over the m tests it makes, stated in the output). With fewer than 3
timed runs (online rows: requests) per side a metric is "insufficient samples": shown, never a
regression.

exit codes:
  0  no regression (including metrics with insufficient samples, which are listed)
  1  regression: a gated metric clearly worse, or a row that was ok and now failed
  2  bad input: a missing, empty, binary or malformed CSV, another schema version, a
     samples file that is missing or corrupt or contradicts its rows, a timed cell that is
     NaN or negative (--point-ratios reads such files on point values), a bad option, an
     unknown variant, or no row to compare
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("csv", nargs="+", metavar="CSV",
                   help="OLD.csv NEW.csv, or one RUN.csv with --baseline-variant or --map")
    p.add_argument("--baseline-variant", default=None, metavar="VARIANT",
                   help="compare every variant against this one: inside one run, or NEW's rows "
                        "against OLD's rows of this variant")
    p.add_argument("--map", action="append", default=[], metavar="NEW=OLD",
                   help="join rows of variant NEW to rows of variant OLD on the same workload "
                        "(e.g. 'kv-cache+myplugin=kv-cache'); repeatable")
    p.add_argument("--reference-variant", default=None, metavar="VARIANT",
                   help="two runs: normalize timed metrics by this variant (default: baseline, "
                        "else kv-cache, when present in both runs)")
    p.add_argument("--absolute", action="store_true",
                   help="two runs: compare raw values, not normalized by a reference variant")
    p.add_argument("--fail-above", action="append", default=[], metavar="[METRIC=]PERCENT",
                   help="regression threshold, default 10%%; METRIC=PERCENT (glob allowed, e.g. "
                        "'*_p99=20%%') sets or gates one metric; repeatable")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                   help="bootstrap resamples per metric (default 2000; raised to 40 per test "
                        "made, so the simultaneous intervals' tails hold resamples)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--point-ratios", action="store_true",
                   help="read results whose samples file is missing or corrupt, or whose timed "
                        "cells are NaN or negative, instead of refusing them (exit 2): the bad "
                        "cells are read as empty, timed metrics use point values, and each "
                        "problem is listed as a note")
    p.add_argument("--all", action="store_true",
                   help="show every compared metric, not only the main ones and flagged ones")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from infer_opt.core.errors import UserError
    from infer_opt.format.io import read_results
    from infer_opt.results.compare import compare, render

    if args.bootstrap < 100:
        raise UserError("--bootstrap", f"must be an integer >= 100, got {args.bootstrap}")
    paths = [Path(p) for p in args.csv]
    if len(paths) not in (1, 2):
        raise UserError("csv", f"expected OLD.csv NEW.csv, or RUN.csv with --baseline-variant "
                               f"or --map; got {len(paths)} files")
    runs = [read_results(p, strict=not args.point_ratios) for p in paths]
    cmp = compare(runs[0], runs[1] if len(runs) == 2 else None,
                  baseline=args.baseline_variant, maps=args.map,
                  reference=args.reference_variant, absolute=args.absolute,
                  thresholds=args.fail_above, resamples=args.bootstrap, seed=args.seed,
                  point_ratios=args.point_ratios)
    print(render(cmp, args.all))
    return 1 if cmp.regressed else 0
