"""`infer-opt sweep`: per variant and policy of an online suite group, search the highest
arrival rate that meets the group's SLO; every probe is a row; plot beside the CSV."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path


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


def main(args: argparse.Namespace) -> int:
    from infer_opt.core.errors import UserError
    from infer_opt.core.models import resolve
    from infer_opt.core.roofline import measure_bandwidth_gb_per_s
    from infer_opt.format.io import ResultsWriter
    from infer_opt.results.serving_plot import write_plot
    from infer_opt.results.table import write_table
    from infer_opt.run.cell import Cell
    from infer_opt.run.plan import (
        check_against_model,
        check_out_dir,
        cli_strings,
        new_run_id,
        resolve_device,
        validate_stacks,
    )
    from infer_opt.run.rounds import run_cell
    from infer_opt.run.suite import load_suite
    from infer_opt.workloads.online.sweep import search_max_rate

    wanted = cli_strings(args.model, args.variants)
    suite = load_suite(args.suite, allow_long_cells=args.allow_long_cells)
    online = [g for g in suite.groups if g.workloads and g.workloads[0].kind == "online"
              and g.workloads[0].slos_ms() and g.workloads[0].arrival != "offline"]
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
    templates = {}
    for w in group.workloads:  # one per policy (and prefix_reuse); the first rate is the start
        templates.setdefault((w.policy, w.prefix_reuse), w)

    # The same checks as `run` (run/plan.py), before the first probe.
    check_out_dir(Path(args.out))
    device = resolve_device(suite.device)
    stacks = validate_stacks(suite, device, model=args.model)
    ref = resolve(args.model or suite.model)
    check_against_model(suite, stacks, ref)
    for v in variants:
        if not stacks[v].engine.step_api:
            raise UserError("variants", f"{v!r} runs on an engine without the decode loop; "
                                        "online policies cannot serve it")
    bandwidth = measure_bandwidth_gb_per_s(device, suite.threads)
    run_id = new_run_id(f"{suite.name}-sweep")
    writer = ResultsWriter(Path(args.out), run_id)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    first = next(iter(templates.values()))
    summary = [f"# Rate sweep {run_id}: group {group.name}, SLO {first.slos_ms()} ms, met by "
               f">= {first.slo_target_pct}% of requests", ""]
    index = 0
    try:
        for variant in variants:
            for (policy, reuse), template in templates.items():
                def passes(rate: float) -> bool:
                    nonlocal index
                    w = replace(template, arrival_rate_per_s=round(rate, 4))
                    w.validate(ref.max_context)
                    cell = Cell(run_id=run_id, suite=suite.name, index=index, model=asdict(ref),
                                variant=variant, workload=w.to_dict(), device=device,
                                threads=suite.threads, bandwidth_gb_per_s=bandwidth,
                                seed=suite.seed, group=group.name)
                    index += 1
                    row, samples = run_cell(cell, suite.timeout_s)
                    writer.add(row, samples)
                    ok = row["status"] == "ok" and row.get("meets_slo") is True
                    log(f"  {variant} {policy} rate {w.arrival_rate_per_s}/s: {row['status']} "
                        f"SLO met {row.get('slo_met_pct', '')}% -> {'pass' if ok else 'fail'}")
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
                log(line)
    finally:
        writer.close()
        write_table(writer.csv_path, reference=suite.reference, also=suite.also_reference)
    png = write_plot(writer.csv_path)
    summary_path = writer.csv_path.with_name(run_id + ".sweep.md")
    summary_path.write_text("\n".join(summary) + "\n", encoding="utf-8")
    print("\n".join(summary))
    print(f"results: {writer.csv_path}\nsummary: {summary_path}"
          + (f"\nplot:    {png}" if png else ""), file=sys.stderr)
    return 0


class _Stop(Exception):
    """A probe row was skipped or failed: the search for this variant/policy ends."""
