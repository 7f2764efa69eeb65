from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-download", action="store_true",
                   help="let a model given as a Hugging Face id be downloaded (default: offline)")
    p.add_argument("--suite", default="auto",
                   help="a named suite (infer-opt suites) or a .toml path; 'auto' = gpu with CUDA, else default")
    p.add_argument("--model", default=None, help="override the suite's model")
    p.add_argument("--variants", default=None,
                   help="comma-separated subset of the suite's variants to run")
    p.add_argument("--out", default="results", help="directory for result files")
    p.add_argument("--executor", default="local",
                   help="local: every job (a group's variants in interleaved rounds, one worker "
                        "process per variant) here; ray: one Ray task per job "
                        "(needs the 'cluster' extra)")
    p.add_argument("--address", default=None,
                   help="with --executor ray: an existing cluster (HOST:6379, or ray://HOST:10001);"
                        " default starts a local Ray for the run")
    p.add_argument("--allow-long-cells", action="store_true",
                   help="accept sampling values above the per-cell ceilings "
                        "(workloads/base.CEILINGS), as the suite key allow_long_cells does")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the whole plan (stacks, workloads, sampling, jobs) "
                        "without loading a model or writing anything")
    p.add_argument("--max-retries", type=int, default=1,
                   help="with --executor ray: retries of a task whose worker or node died")


def main(args: argparse.Namespace) -> int:
    from infer_opt.commands.display import displayed
    from infer_opt.results.table import write_table
    from infer_opt.run.executors import make_executor
    from infer_opt.run.plan import cli_strings
    from infer_opt.run.runner import run_suite
    from infer_opt.run.suite import load_suite

    name = args.suite
    if name == "auto":
        import torch

        name = "gpu" if torch.cuda.is_available() else "default"
    variants = cli_strings(args.model, args.variants)
    suite = load_suite(name, allow_long_cells=args.allow_long_cells)
    if args.dry_run:
        from infer_opt.run.dry_run import main as dry_run

        return dry_run(suite, args.model, variants)
    executor = make_executor(args.executor, address=args.address, max_retries=args.max_retries)
    with displayed(suite) as display:  # the finished rows get their table on Ctrl-C too
        csv_path = run_suite(suite, Path(args.out), model=args.model, variants_filter=variants,
                             executor=executor, log=display.log, on_event=display.on_event)
    table = write_table(csv_path, reference=suite.reference, also=suite.also_reference)
    if table is not None:
        print(table.read_text(encoding="utf-8"))
    print(f"results: {csv_path}" + (f"\ntable:   {table}" if table else ""), file=sys.stderr)
    from infer_opt.results.serving_plot import write_plot

    png = write_plot(csv_path)  # online rows only: latency vs throughput per policy
    if png is not None:
        print(f"plot:    {png}", file=sys.stderr)
    from infer_opt.results.served_plot import write_served_plot

    served_png = write_served_plot(csv_path)  # served variants: one curve per server
    if served_png is not None:
        print(f"plot:    {served_png}", file=sys.stderr)
    return 0
