"""`infer-opt sweep`: per variant and policy of an online suite group, search the highest
arrival rate that meets the group's SLO; every probe is a row; plot beside the CSV."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-download", action="store_true",
                   help="let a model given as a Hugging Face id be downloaded (default: offline)")
    p.add_argument("--suite", default="serving", help="a named suite (infer-opt suites) or a .toml path")
    p.add_argument("--group", default=None,
                   help="name of an online group with an SLO (default: the first such group)")
    p.add_argument("--model", default=None, help="override the suite's model")
    p.add_argument("--variants", default=None, help="comma-separated subset of the group's variants")
    p.add_argument("--max-doublings", type=int, default=5, help="doublings/halvings to bracket")
    p.add_argument("--bisect-steps", type=int, default=3, help="bisections of the bracket")
    p.add_argument("--out", default="results", help="directory for result files")
    p.add_argument("--allow-long-cells", action="store_true",
                   help="accept sampling values above the per-cell ceilings (as `run`)")
    p.add_argument("--executor", default="local",
                   help="local: every probe here; ray: each probe a Ray task (needs the "
                        "'cluster' extra)")
    p.add_argument("--address", default=None,
                   help="with --executor ray: an existing cluster (default: a local Ray)")
    p.add_argument("--max-retries", type=int, default=1,
                   help="with --executor ray: retries of a task whose worker or node died")


def main(args: argparse.Namespace) -> int:
    from infer_opt.commands.display import displayed
    from infer_opt.core.errors import UserError
    from infer_opt.results.table import write_table
    from infer_opt.run.executors import make_executor
    from infer_opt.run.plan import cli_strings
    from infer_opt.run.suite import load_suite

    wanted = cli_strings(args.model, args.variants)
    suite = load_suite(args.suite, allow_long_cells=args.allow_long_cells)
    executor = make_executor(args.executor, address=args.address, max_retries=args.max_retries)
    online = [g for g in suite.groups if g.workloads and g.workloads[0].kind == "online"
              and g.workloads[0].slos_ms() and g.workloads[0].arrival in ("poisson", "gamma")]
    if args.group is not None:
        online = [g for g in online if g.name == args.group]
    if not online:
        raise UserError("group", f"no online group with arrival poisson/gamma and an SLO "
                        f"(ttft_slo_ms, tpot_slo_ms or e2e_slo_ms) in {suite.path}"
                        + (f" named {args.group!r}" if args.group else ""))
    if args.max_doublings < 1 or args.bisect_steps < 0:
        raise UserError("max-doublings", "must be >= 1 (and --bisect-steps >= 0)")
    group = online[0]
    variants = group.variants
    if wanted is not None:
        want = wanted
        variants = [v for v in variants if v in want]
        if not variants:
            raise UserError("variants", f"none of {want} is in group {group.name!r}: {group.variants}")
    with displayed(suite) as display:  # the probes that finished get their table on Ctrl-C
        csv_path, summary = _sweep(args, suite, group, variants, executor, display)
    write_table(csv_path, reference=suite.reference, also=suite.also_reference)
    from infer_opt.results.serving_plot import write_plot

    png = write_plot(csv_path)
    summary_path = csv_path.with_name(csv_path.name.removesuffix(".csv") + ".sweep.md")
    summary_path.write_text("\n".join(summary) + "\n", encoding="utf-8")
    print("\n".join(summary))
    print(f"results: {csv_path}\nsummary: {summary_path}"
          + (f"\nplot:    {png}" if png else ""), file=sys.stderr)
    return 0


def _sweep(args: argparse.Namespace, suite: Any, group: Any, variants: list[str],
           executor: Any, display: Any) -> tuple[Path, list[str]]:
    """Plans the group's cells as `run` does (run/runner.plan_run: the same checks, the
    plugins' metric columns), then probes rates, one job of one cell per probe, through the
    executor; every probe is a row. Returns the CSV and the summary lines."""
    from infer_opt.run.executors import opened
    from infer_opt.run.progress import RunStarted
    from infer_opt.run.rounds import Job
    from infer_opt.run.runner import Recorder, logs_beside, plan_run
    from infer_opt.workloads.online.sweep import search_max_rate

    planned = plan_run(replace(suite, groups=[group]), Path(args.out), args.model, variants,
                       display.log, run_name=f"{suite.name}-sweep")
    # One template per policy (and prefix_reuse): the group's first rate is where search starts.
    templates: dict[tuple[str, bool], Any] = {}
    for w in group.workloads:
        templates.setdefault((w.policy, w.prefix_reuse), w)
    first = next(iter(templates.values()))
    run_id = planned.run_id
    summary = [f"# Rate sweep {run_id}: group {group.name}, SLO {first.slos_ms()} ms, met by "
               f">= {first.slo_target_pct}% of requests", ""]
    index = 0
    with opened(executor) as run_jobs, \
            Recorder(Path(args.out), run_id, planned.cells[0].metric_columns) as rec, \
            logs_beside(rec.csv_path):  # a served variant's server logs, as `run` keeps them
        display.log(f"infer-opt: writing {rec.csv_path} (one row per probe)")
        display.on_event(RunStarted(run_id, rec.csv_path, 0, 0))
        for variant in variants:
            for (policy, reuse), template in templates.items():
                base = next(c for c in planned.cells if c.variant == variant
                            and c.workload == template.to_dict())

                def passes(rate: float) -> bool:
                    nonlocal index
                    w = replace(template, arrival_rate_per_s=round(rate, 4))
                    w.validate(planned.ref.max_context)
                    cell = replace(base, index=index, workload=w.to_dict())
                    index += 1
                    job = Job([cell], suite.timeout_s, suite.seed)
                    [result] = list(run_jobs([job], display.on_event))
                    rec.add(result)
                    row = result.row
                    ok = row["status"] == "ok" and row.get("meets_slo") is True
                    display.log(f"  {variant} {policy} rate {w.arrival_rate_per_s}/s: "
                                f"{row['status']} SLO met {row.get('slo_met_pct', '')}% -> "
                                f"{'pass' if ok else 'fail'}")
                    if row["status"] != "ok":
                        raise _Stop(row.get("reason", ""))
                    return ok

                try:
                    res = search_max_rate(passes, template.arrival_rate_per_s,
                                          args.max_doublings, args.bisect_steps)
                    best = "none (even the lowest rate failed)" if res.best_rate is None else \
                        f"{res.best_rate:.3g} req/s"
                    above = "" if res.first_fail is None else f", fails at {res.first_fail:.3g} req/s"
                    if res.first_fail is None:
                        above = " (never failed: raise --max-doublings)"
                    line = f"- {variant} · {policy}" + (" · prefix reuse" if reuse else "") + \
                        f": highest rate meeting the SLO {best}{above}; {len(res.probes)} probes"
                except _Stop as stop:
                    line = f"- {variant} · {policy}: probe did not run ({stop})"
                summary.append(line)
                display.log(line)
    return rec.csv_path, summary


class _Stop(Exception):
    """A probe row was skipped or failed: the search for this variant/policy ends."""
