"""A run's report: markdown with PNG plots, written beside the CSV.

<stem>.report.md          the table, the plots, what each shows, and what was left out and why
<stem>.latency.png        TTFT and TPOT per row: bar at p50, whisker up to p99
<stem>.throughput.png     decode tokens/s vs batch size, one line per variant
<stem>.fidelity.png       speedup vs KL divergence from the reference (rows with kl_mean)
<stem>.frontier.png       decode tokens/s vs KL (log), the frontier per workload (results/frontier.py)
<stem>.serving.png        latency vs achieved throughput per serving policy (online rows)
<stem>.load.png           latency vs offered load (rows of workloads other than static-batch)

Plots use matplotlib's Agg backend: no display needed. Columns another workload or plugin adds
are used when present; a plot whose columns are absent is skipped and the report says so.
"""

from __future__ import annotations

from pathlib import Path

from infer_opt.core.errors import UserError
from infer_opt.format.io import parse_number as _num
from infer_opt.format.io import read_results, samples_path_for
from infer_opt.results.depth_plot import report_section as depth_section
from infer_opt.results.plots import figure, label_points, save
from infer_opt.results.reference import speedup
from infer_opt.results.table import render_run

# Columns that may carry the offered load of a serving workload, in order of preference.
LOAD_COLUMNS = ("request_rate_per_s", "arrival_rate_per_s", "rate_per_s", "offered_rate_per_s",
                "concurrency", "max_concurrency", "num_clients")




def _label(r: dict[str, str]) -> str:
    shape = f"p{r.get('prompt_tokens', '')}/n{r.get('new_tokens', '')}"
    if r.get("workload", "static-batch") in ("", "static-batch"):
        return f"{r['variant']} bs{r.get('batch_size', '')} {shape}"
    # Serving rows: the policy and the load say what the row is; there is no batch size.
    rate, clients = _num(r.get("arrival_rate_per_s")), _num(r.get("concurrency"))
    load = f"{r.get('arrival', '')}" + (f" {rate:g}/s" if rate else "") + \
        (f" {clients:g}" if clients else "")
    return (f"{r['variant']} {r.get('policy', '')} {load} n={r.get('num_requests', '')} "
            f"{shape}{_reuse(r)}")


def _reuse(r: dict[str, str]) -> str:
    return " prefix-reuse" if str(r.get("prefix_reuse", "")).lower() == "true" else ""


def _short(ms: float) -> str:
    """3 significant digits, thousands as k: 15800 -> '15.8k', 97.56 -> '97.6'."""
    return f"{ms / 1000:.3g}k" if ms >= 1000 else f"{ms:.3g}"


def plot_latency(rows: list[dict[str, str]], path: Path) -> bool:
    pts = [r for r in rows if r["status"] == "ok" and _num(r.get("ttft_ms_p50")) is not None]
    if not pts:
        return False
    fig, grid = figure(1, 2, figsize=(11, 0.45 * len(pts) + 2.0), sharey=True)
    axes = grid[0]
    labels = [_label(r) for r in pts]
    ys = list(range(len(pts)))
    for ax, metric, title in ((axes[0], "ttft_ms", "TTFT (time to first token)"),
                              (axes[1], "tpot_ms", "TPOT (time per output token)")):
        p50 = [_num(r.get(f"{metric}_p50")) or 0.0 for r in pts]
        p99 = [tail(r, metric) for r in pts]
        err = [[0.0] * len(pts), [max(b - a, 0.0) for a, b in zip(p50, p99)]]
        ax.barh(ys, p50, xerr=err, color="tab:blue", alpha=0.45, capsize=3,
                error_kw={"ecolor": "black", "lw": 1})
        positive = [v for v in p50 if v > 0]
        log = bool(positive) and max(positive) / min(positive) > 20
        if log:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on log axes
        top = max(p99 + p50) or 1.0
        ax.set_xlim(right=top * (8.0 if log else 1.35))  # room for the value after each whisker
        for y, a, b in zip(ys, p50, p99):  # values after the whisker, clear of the labels
            ax.text(max(a, b) * 1.08 if log else max(a, b) + 0.02 * top, y,
                    f"{_short(a)}/{_short(b)}", va="center", ha="left", fontsize=7, color="black")
        ax.set_title(title)
        ax.set_xlabel("ms (lower is better); numbers: p50/whisker")
        ax.grid(True, axis="x", alpha=0.3)
    env = pts[0]
    # Constrained layout gives the suptitle its own band above both panel titles.
    fig.suptitle(f"{env.get('model', '')} on {env.get('device', '')} "
                 f"({env.get('gpu_name') or env.get('cpu_model', '')}, "
                 f"{env.get('torch_threads', '')} threads): bar p50, whisker p99 (max below "
                 f"100 samples)", fontsize=10)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[0].invert_yaxis()
    save(fig, path)
    return True


def tail(row: dict[str, str], metric: str) -> float:
    """The whisker's end: p99, or the max where p99 is empty (fewer than 100 samples)."""
    return _num(row.get(f"{metric}_p99")) or _num(row.get(f"{metric}_max")) or 0.0


def plot_throughput(rows: list[dict[str, str]], path: Path) -> bool:
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        bs, tps = _num(r.get("batch_size")), _num(r.get("decode_tokens_per_s"))
        if r["status"] != "ok" or r.get("workload") != "static-batch" or bs is None or tps is None:
            continue
        key = f"{r['variant']} p{r['prompt_tokens']}/n{r['new_tokens']}"
        series.setdefault(key, []).append((bs, tps))
    if not any(len({b for b, _ in v}) > 1 for v in series.values()):
        return False  # one batch size per variant: the latency plot already shows it
    # Only variants measured at several batch sizes: a lone bs-1 point says nothing about
    # scaling (the latency plot has it), and 15 legend entries would recycle colours.
    series = {k: v for k, v in series.items() if len({b for b, _ in v}) > 1}
    fig, grid = figure()
    ax = grid[0][0]
    for key, pts in sorted(series.items()):
        pts.sort()
        ax.plot([b for b, _ in pts], [t for _, t in pts], "o-", label=key)
        b, t = pts[-1]
        ax.annotate(f"{t:.3g}", (b, t), xytext=(4, 0), textcoords="offset points", fontsize=7)
    ax.set_xscale("log", base=2)
    sizes = sorted({b for pts in series.values() for b, _ in pts})
    ax.set_xticks(sizes, [f"{b:g}" for b in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("decode tokens/s, all requests (higher is better)")
    ax.set_title("Throughput vs batch size (static batch)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)
    return True


def plot_fidelity(rows: list[dict[str, str]], reference: str, path: Path) -> bool:
    """One labelled point per ok row whose reference row has the same workload and batch, so
    every speedup on the plot is like for like (a bs-4 row is divided by the bs-4 reference)."""
    shapes = {(r.get("prompt_tokens"), r.get("new_tokens")) for r in rows
              if r["status"] == "ok" and _num(r.get("kl_mean")) is not None}
    pts = []
    for r in rows:
        kl = _num(r.get("kl_mean"))
        if r["status"] != "ok" or kl is None or r["variant"] == reference:
            continue  # the reference itself is (0, 1x) by definition: the grey line
        ratio = speedup(r, rows, reference)
        if ratio is not None:
            bs = r.get("batch_size", "")
            label = r["variant"] + ("" if bs in ("1", "") else f" bs{bs}")
            if len(shapes) > 1:
                label += f" ({r.get('prompt_tokens')}/{r.get('new_tokens')})"
            pts.append((kl, ratio, label))
    if not pts:
        return False
    fig, grid = figure(figsize=(9, 5.5))
    ax = grid[0][0]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue", alpha=0.8, zorder=3)
    ax.set_xscale("symlog", linthresh=1e-6)
    ax.set_xlim(left=-1e-7, right=max(p[0] for p in pts) * 30 + 1e-5)
    # Labels beside the points, not in a legend: 15+ variants would repeat legend colours.
    label_points(ax, pts)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xlabel(f"KL divergence from {reference} (kl_mean, nats; 0 = same answers; "
                  "lower is better)")
    ax.set_ylabel(f"decode speedup vs {reference}, same workload and batch")
    ax.set_title("Speed bought vs fidelity given up (one point per row"
                 + ("; prompt/new tokens in brackets)" if len(shapes) > 1 else ")"))
    ax.grid(True, alpha=0.3)
    save(fig, path)
    return True


def plot_serving(rows: list[dict[str, str]], columns: list[str], path: Path) -> str | None:
    """Latency vs offered load for non-static-batch rows. Returns the load column, or None."""
    online = [r for r in rows if r["status"] == "ok" and r.get("workload", "static-batch")
              not in ("", "static-batch")]
    xcol = next((c for c in LOAD_COLUMNS if c in columns
                 and any(_num(r.get(c)) is not None for r in online)), None)
    if not online or xcol is None:
        return None
    metrics = [m for m in ("ttft_ms", "tpot_ms", "e2e_ms") if f"{m}_p50" in columns]
    fig, axes = figure(1, len(metrics), figsize=(4.2 * len(metrics), 4))
    by_variant: dict[str, list[dict[str, str]]] = {}
    for r in online:  # one line per variant and policy (and prefix reuse), across offered loads
        policy = f" {r['policy']}" if r.get("policy") else ""
        by_variant.setdefault(f"{r['variant']}{policy}{_reuse(r)} ({r['workload']})", []).append(r)
    for ax, m in zip(axes[0], metrics):
        for name, rs in sorted(by_variant.items()):
            rs = sorted((r for r in rs if _num(r.get(xcol)) is not None),
                        key=lambda r: _num(r[xcol]) or 0.0)
            xs = [_num(r[xcol]) for r in rs]
            line = ax.plot(xs, [_num(r.get(f"{m}_p50")) for r in rs], "o-", label=f"{name} p50")[0]
            if f"{m}_p99" in columns:
                ax.plot(xs, [_num(r.get(f"{m}_p99")) for r in rs], "--", color=line.get_color(),
                        label=f"{name} p99")
        ax.set_xlabel(xcol)
        ax.set_ylabel(f"{m} (lower is better)")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Serving: latency vs offered load")
    save(fig, path)
    return xcol


def newest_csv(directory: Path) -> Path:
    """The newest results CSV in a directory (by name: run ids start with a UTC stamp)."""
    found = sorted(p for p in directory.glob("*.csv") if samples_path_for(p).is_file())
    if not found:
        raise UserError("csv", f"no results CSV (with its .samples.jsonl) in {directory}")
    return found[-1]


def write_report(csv_path: Path, reference: str = "baseline", point_ratios: bool = False
                 ) -> Path:
    # Before anything is written: the reader's checks, one line.
    run = read_results(csv_path, strict=not point_ratios)
    rows, columns = run.rows, run.columns
    stem = csv_path.name.removesuffix(".csv")
    out_dir = csv_path.parent
    lines = [f"# Report: {stem}", "",
             f"Rows: {len(rows)} ({sum(r['status'] == 'ok' for r in rows)} ok, "
             f"{sum(r['status'] == 'skipped' for r in rows)} skipped, "
             f"{sum(r['status'] == 'failed' for r in rows)} failed). Source: `{csv_path.name}`; "
             f"raw samples: `{stem}.samples.jsonl`.", ""] + [f"Note: {n}" for n in run.notes]
    if run.notes:
        lines.append("")
    skipped: list[str] = []

    latency = out_dir / f"{stem}.latency.png"
    if plot_latency(rows, latency):
        lines += ["## Latency per row", "",
                  "Bars are the median (p50) over timed runs; whiskers reach the p99, or the "
                  "max where there are fewer than 100 samples (an empty p99). TTFT "
                  "includes the prompt's prefill; TPOT is (e2e - TTFT) / (new tokens - 1).", "",
                  f"![latency]({latency.name})", ""]
    else:
        skipped.append("latency: no ok row with latency columns")
    throughput = out_dir / f"{stem}.throughput.png"
    if plot_throughput(rows, throughput):
        lines += ["## Throughput vs batch size", "",
                  "Decode tokens/s summed over the batch (median over runs).", "",
                  f"![throughput]({throughput.name})", ""]
    else:
        skipped.append("throughput vs batch size: no variant was run at two or more batch sizes")
    fidelity = out_dir / f"{stem}.fidelity.png"
    if "kl_mean" not in columns:
        skipped.append("speedup vs fidelity: this CSV has no kl_mean column")
    elif plot_fidelity(rows, reference, fidelity):
        lines += ["## Speedup vs fidelity", "",
                  f"Each point is a row with a KL divergence from `{reference}`; its speedup is "
                  f"decode tokens/s over `{reference}` on the same lengths and batch size "
                  f"(rows without such a `{reference}` row are left out).", "",
                  f"![fidelity]({fidelity.name})", ""]
    else:
        skipped.append(f"speedup vs fidelity: no ok row with kl_mean and a {reference} row")
    from infer_opt.results.frontier import KL_FLOOR, plot_frontier

    frontier = out_dir / f"{stem}.frontier.png"
    if "kl_mean" in columns and plot_frontier(rows, frontier):
        lines += ["## Decode frontier", "",
                  "Decode tokens/s against KL(baseline || variant) on a log axis, one point per "
                  "ok static-batch row with a KL, per workload; the step line is the frontier "
                  "(the fastest row at each fidelity or better). KL 0 cannot sit on a log axis: "
                  f"rows below {KL_FLOOR:g} (the baseline itself, exact engines) are drawn at "
                  f"{KL_FLOOR:g}. The table's \"Decode frontier\" section names the fastest row "
                  "per fidelity level.", "", f"![frontier]({frontier.name})", ""]
    else:
        skipped.append("decode frontier: fewer than two ok static-batch rows with kl_mean in "
                       "any workload")
    from infer_opt.results.serving_plot import write_plot

    curve = write_plot(csv_path)  # <stem>.serving.png: latency vs achieved throughput per policy
    if curve is not None:
        lines += ["## Serving: latency vs throughput per policy", "",
                  "One point per online row (p50 and p99): further right serves more tokens/s, "
                  "lower answers sooner.", "", f"![serving policies]({curve.name})", ""]
    serving = out_dir / f"{stem}.load.png"
    xcol = plot_serving(rows, columns, serving)
    if xcol:
        lines += ["## Serving curves", "", f"Latency percentiles vs `{xcol}` per variant.", "",
                  f"![serving]({serving.name})", ""]
    else:
        skipped.append("serving curves: no ok row of a serving workload with an offered-load "
                       f"column ({', '.join(LOAD_COLUMNS[:3])}, ...)")
    lines += depth_section(csv_path)  # <stem>.depth.png: decode tok/s and KV MB vs depth
    lines += ["## Table", "", render_run(run, reference)]
    if skipped:
        lines += ["## Not plotted", ""] + [f"- {s}" for s in skipped] + [""]
    out = out_dir / f"{stem}.report.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
