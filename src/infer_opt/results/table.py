"""The comparison table: one line per row, with speedup and greedy-token match against the
reference variant (baseline) on the same prompts and lengths.

`n` is the number of timed runs behind the row's statistics (timed_runs, else repeats); the
TPOT interval is the 95% bootstrap interval of its median over those runs; the speedup is the
median of per-round ratios to the reference row with its 95% bootstrap interval where both rows
have per-run samples from the same interleaved rounds (else the ratio of the two rows' decode
tok/s, without an interval); `busy` marks rows
measured while other processes used the machine (telemetry: machine_busy).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infer_opt.core.errors import UserError
from infer_opt.core.greedy import greedy_match
from infer_opt.format.io import ResultsFile, read_results
from infer_opt.format.io import parse_number as _num
from infer_opt.results.frontier import render_frontier
from infer_opt.results.markdown import table
from infer_opt.results.reference import (find_reference, paired_speedup, speedup,
                                         workload_key)
from infer_opt.results.served_table import render_served
from infer_opt.results.serving_table import busy_mark as _busy
from infer_opt.results.serving_table import render_online
from infer_opt.results.speculative_table import render_speculative


def _served_section(rows: list[dict[str, str]], samples: dict[str, Any]) -> str:
    served = render_served(rows, samples)
    return served and "\n" + served

BUSY_NOTE = ("busy: while this row was timed, other processes used more than a quarter of a "
             "core on average or the hypervisor stole more than 5% of the CPU (columns "
             "other_cpu_pct, cpu_steal_pct); its timings include their work")


def _f(value: Any, digits: int = 1) -> str:
    v = _num(value)
    return "" if v is None else f"{v:.{digits}f}"


def render(csv_path: Path, reference: str = "baseline", also: Sequence[str] = (),
           point_ratios: bool = False) -> str:
    """The table of a results CSV; UserError (one line) when read_results refuses the file
    (point_ratios: a damaged samples file or malformed timed cells are notes instead)."""
    return render_run(read_results(csv_path, strict=not point_ratios), reference, also)


def _n(row: dict[str, str]) -> str:
    return row.get("timed_runs") or row.get("repeats") or ""


def _ci(row: dict[str, str], column: str, digits: int = 2) -> str:
    lo, hi = _num(row.get(f"{column}_ci_low")), _num(row.get(f"{column}_ci_high"))
    return "" if lo is None or hi is None else f"{lo:.{digits}f}..{hi:.{digits}f}"


def _prompt(row: dict[str, str]) -> str:
    """The prompt length, and the context depth it was appended at ('64 @4096')."""
    depth = row.get("depth_tokens", "")
    return row["prompt_tokens"] + (f" @{depth}" if depth not in ("", "0") else "")


def render_run(run: ResultsFile, reference: str = "baseline", also: Sequence[str] = ()) -> str:
    rows = sorted(run.rows, key=lambda r: int(r["cell_index"]))  # Ray writes as cells finish
    tokens = {i: s.get("tokens") for i, s in run.samples.items()}
    head = ["variant", "bs", "prompt", "new", "status", "n", "TTFT p50 ms", "TPOT p50 ms",
            "TPOT 95% CI", "ITL p99 ms", "decode tok/s", f"speedup vs {reference}",
            "greedy = ref", "weight MB", "peak RSS MB", "roofline %", "KL mean", "top-1 %",
            "greedy match", "machine", "reason / notes"]
    body: list[list[str]] = []
    for r in rows:
        if r.get("workload") == "online":
            continue  # rendered in their own section below
        ref, same_batch = find_reference(r, rows, reference)
        ratio_text = match = ""
        if ref is not None and r["status"] == "ok":
            ratio = speedup(r, rows, reference, same_batch_only=False)
            paired = paired_speedup(r, ref, run.samples) if same_batch else None
            if paired is not None and ref is not r:
                mid, lo, hi = paired
                ratio_text = f"{mid:.2f}x" + ("" if lo is None or hi is None
                                              else f" [{lo:.2f}, {hi:.2f}]")
            elif ratio is not None:
                ratio_text = f"{ratio:.2f}x" + ("" if same_batch else " (vs bs1)")
            a, b = tokens.get(r["cell_index"]), tokens.get(ref["cell_index"])
            if a and b:
                match = f"{greedy_match(a, b)}/{len(a[0]) if a else 0}"
        why = r.get("reason") or r.get("notes") or ""
        body.append([
            r["variant"], r["batch_size"], _prompt(r), r["new_tokens"], r["status"],
            _n(r), _f(r["ttft_ms_p50"]), _f(r["tpot_ms_p50"], 2), _ci(r, "tpot_ms_p50"),
            _f(r["itl_ms_p99"], 2), _f(r["decode_tokens_per_s"]), ratio_text, match,
            _f(r["weight_mb"]), _f(r["peak_rss_mb"], 0), _f(r["roofline_pct"]),
            _kl(r.get("kl_mean")), _f(r.get("top1_agreement_pct")),
            _gm(r.get("greedy_match_tokens")), _busy(r), why,
        ])
    lines = [table(head, body)]
    env = rows[0] if rows else {}
    footer = (f"\nmodel {env.get('model', '')}, device {env.get('device', '')} "
              f"({env.get('gpu_name') or env.get('cpu_model', '')}), "
              f"{env.get('torch_threads', '')} "
              f"threads, torch {env.get('torch_version', '')}, transformers "
              f"{env.get('transformers_version', '')}, measured bandwidth "
              f"{env.get('bandwidth_gb_per_s', '')} GB/s, commit {env.get('git_commit', '')}\n")
    online = render_online(rows, tokens)
    if online and all(r.get("workload") == "online" for r in rows):
        lines = []  # nothing static to show: only the online section
    spec = render_speculative(rows, tokens)
    plugin = plugin_metrics_section(rows, run.extra_columns)
    from infer_opt.results.energy_table import render_energy

    energy = render_energy(rows)
    frontier = render_frontier(rows)
    notes = [f"note: {n}" for n in run.notes]
    if any(_busy(r) for r in rows):
        notes.append(f"note: {BUSY_NOTE}")
    return ("".join(n + "\n" for n in notes) + ("\n" if notes else "") + "\n".join(lines)
            + "\n" + (online and "\n" + online) + (spec and "\n" + spec)
            + (plugin and "\n" + plugin) + (energy and "\n" + energy)
            + _served_section(rows, run.samples) + footer
            + pareto_section(rows, reference, also)
            + (frontier and "\n" + frontier))


def plugin_metrics_section(rows: list[dict[str, str]], columns: Sequence[str]) -> str:
    """The metric columns plugins declared (core/plugin.Metric), for the rows that filled
    them: a third-party metric is in the table as soon as its plugin declares it."""
    filled = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)]
    mine = [r for r in rows if any(r.get(c) not in (None, "") for c in filled)]
    if not mine:
        return ""
    head = ["variant", "workload", *filled]
    body: list[list[str]] = []
    for r in mine:
        where = (f"bs {r.get('batch_size')}, {r.get('prompt_tokens')}/{r.get('new_tokens')}"
                 if r.get("workload") != "online" else f"online {r.get('policy', '')}")
        body.append([r["variant"], where] + [_f(r.get(c), 3) for c in filled])
    return "## Plugin metrics\n\n" + table(head, body) + "\n"


def _kl(value: Any) -> str:
    if str(value) in ("inf", "nan"):  # non-finite logits must stay visible
        return str(value)
    v = _num(value)
    return "" if v is None else f"{v:.2g}"


def _gm(value: Any) -> str:
    from infer_opt.run.fidelity import NEW_TOKENS

    return "" if value in (None, "") else f"{value}/{NEW_TOKENS}"


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (speedup, kl) points: True where no other point is at least as fast and at least as
    faithful, and strictly better in one of the two."""
    return [not any(s2 >= s and k2 <= k and (s2 > s or k2 < k) for s2, k2 in points)
            for s, k in points]


def pareto_section(rows: list[dict[str, str]], reference: str = "baseline",
                   also: Sequence[str] = ()) -> str:
    """Speedup vs fidelity: ok rows of each workload sorted by speedup, with their KL; `*` marks
    the Pareto front (nothing else is both faster and closer to the baseline). Each variant in
    `also` (e.g. kv-cache, the fp32 variant every optimization should beat) adds a column of
    speedups against its row on the same workload and batch."""
    groups: dict[tuple[str, ...], list[tuple[float, float, dict[str, str]]]] = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        ratio, kl = speedup(r, rows, reference), _num(r.get("kl_mean"))
        if ratio is None or kl is None:
            continue
        groups.setdefault(workload_key(r) + (r["batch_size"],), []).append((ratio, kl, r))
    if not groups:
        return ""
    out = [f"\n## Speedup vs fidelity (decode tok/s vs {reference}; KL(baseline || variant), "
           "nats; * = Pareto front)\n"]
    for (_model, _device, _kind, prompt, new, depth, bs), items in groups.items():
        items.sort(key=lambda x: (-x[0], x[1]))
        front = pareto_front([(s, k) for s, k, _ in items])
        others = [v for v in also if v != reference]
        at = f", depth {depth}" if depth not in ("", "0") else ""
        out.append(f"bs {bs}, prompt {prompt}, new {new}{at}\n")
        head = ["front", "variant", "speedup", *[f"vs {v}" for v in others], "KL mean", "top-1 %",
                "greedy match", "weight MB"]
        body = []
        for (ratio, _kl_value, r), on_front in zip(items, front):
            vs = [f"{x:.2f}x" if (x := speedup(r, rows, v)) is not None else "" for v in others]
            body.append([
                "*" if on_front else "", r["variant"], f"{ratio:.2f}x", *vs,
                _kl(r.get("kl_mean")), _f(r.get("top1_agreement_pct")),
                _gm(r.get("greedy_match_tokens")), _f(r["weight_mb"])])
        out += [table(head, body), ""]
    return "\n".join(out)


def write_table(csv_path: Path, reference: str = "baseline", also: Sequence[str] = ()
                ) -> Path | None:
    """Writes <run>.md beside the CSV; None (nothing written) when the reader refuses the CSV,
    e.g. a run interrupted before its first row: the interruption must not be masked."""
    try:
        text = render(csv_path, reference, also)
    except UserError:
        return None
    out = csv_path.with_suffix(".md")
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
