"""`infer-opt` command line. Each subcommand is a module in infer_opt.commands with
`add_arguments(parser)` and `main(args) -> int`; heavy imports wait until one is chosen."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from infer_opt.core.errors import UserError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("infer_opt.commands.run", "run a suite and write results/<run_id>.csv"),
    "suites": ("infer_opt.commands.suites", "list the shipped suites and their cell counts"),
    "plugins": ("infer_opt.commands.plugins", "list engines and optimizations, and whether they "
                                              "run here"),
    "models": ("infer_opt.commands.models", "list built-in models / prepare the default one"),
    "table": ("infer_opt.commands.table", "print the comparison table of a results CSV"),
    "sweep": ("infer_opt.commands.sweep", "search the highest arrival rate meeting an SLO (online)"),
    "compare": ("infer_opt.commands.compare", "compare two result CSVs; exit 1 on a regression"),
    "report": ("infer_opt.commands.report", "write a markdown report with plots beside a CSV"),
    "complexity": ("infer_opt.commands.complexity", "fit time-vs-length exponents (O(n^2) checks)"),
    "distill": ("infer_opt.commands.distill", "train a layer-dropped student of a model (cached)"),
    "serve": ("infer_opt.commands.serve", "serve a variant behind an OpenAI-compatible HTTP API"),
    "import-benchmark": ("infer_opt.commands.import_benchmark",
                         "convert pytest-benchmark JSON into a results CSV"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infer-opt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "allow_download", None) is False:
        from infer_opt.core.models import forbid_downloads

        forbid_downloads()  # before huggingface_hub is imported: it reads the flag once
    from infer_opt.core.quiet import quiet_libraries
    from infer_opt.run import faults

    quiet_libraries()
    saved = faults.install()  # Ctrl-C and SIGTERM: one line below, exit 130 / 143
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except UserError as exc:
        print(f"infer-opt: error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except faults.WriteFailed as exc:
        print(f"infer-opt: error: {exc}", file=sys.stderr)
        return faults.WriteFailed.exit_code
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        kept = "; finished rows are kept" if args.command in ("run", "sweep") else ""
        print(f"infer-opt: interrupted by {signal.Signals(signum).name}{kept}", file=sys.stderr)
        return 128 + signum
    finally:
        faults.restore(saved)  # main() called in-process (tests) leaves the handlers as found


if __name__ == "__main__":
    sys.exit(main())
