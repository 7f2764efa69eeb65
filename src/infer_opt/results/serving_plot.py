"""Latency against throughput, one curve per policy (and variant): <run>.serving.png.

Each point is one online row (one arrival rate); x = output tokens/s achieved, y = latency.
Left: TTFT p50 (solid) and p99 (dashed); right: TPOT p50 and p99. As the offered rate grows a
policy's curve moves right until it saturates, then bends up: the knee is the most load it
takes at acceptable latency. Needs matplotlib (extra `report`); without it no plot is written.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path

from infer_opt.format.io import read_results


def plot_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name.removesuffix(".csv") + ".serving.png")


def write_plot(csv_path: Path) -> Path | None:
    """Writes the plot beside the CSV; None when there are no online rows or no matplotlib.
    A CSV the reader refuses raises UserError before anything is written."""
    # Shared-prefix rows are about TTFT with and without reuse: the table shows them.
    # The report read the file first (strict unless --point-ratios): malformed cells are empty.
    rows = [r for r in read_results(csv_path, with_samples=False, strict=False).rows
            if r.get("workload") == "online" and r["status"] == "ok"
            and r.get("prompts") != "shared-prefix"]
    if not rows or importlib.util.find_spec("matplotlib") is None:
        return None
    curves: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        curves[f"{r['policy']} · {r['variant']} · {r['arrival']}"].append(r)
    title = f"latency vs throughput per policy ({rows[0]['model']}, {rows[0]['device']})"
    return draw_latency_curves(curves, title, plot_path(csv_path))


def draw_latency_curves(curves: dict[str, list[dict[str, str]]], title: str, out: Path) -> Path:
    """TTFT (left) and TPOT (right), p50 solid and p99 dashed, against achieved output
    tokens/s, one curve per label, points in order of offered rate (offline last)."""
    from infer_opt.results.plots import figure, save

    fig, grid = figure(1, 2, figsize=(12, 5))
    axes = grid[0]
    for i, (label, pts) in enumerate(sorted(curves.items())):
        # Along the curve the offered load grows (the rate, or the closed-loop clients);
        # offline (everything at t = 0) is the limit.
        pts.sort(key=lambda r: float(r.get("arrival_rate_per_s") or r.get("concurrency")
                                     or "inf"))
        x = [float(r["output_tokens_per_s"]) for r in pts]
        color = f"C{i % 10}"
        for ax, metric in zip(axes, ("ttft_ms", "tpot_ms")):
            for stat, style in (("p50", "-"), ("p99", "--")):
                y = [float(r[f"{metric}_{stat}"]) if r.get(f"{metric}_{stat}") else float("nan")
                     for r in pts]
                ax.plot(x, y, style, marker="o", color=color,
                        label=label if ax is axes[0] and stat == "p50" else None)
    for ax, name in zip(axes, ("TTFT (ms)", "TPOT (ms)")):
        ax.set_xlabel("output tokens/s (achieved)")
        ax.set_ylabel(name)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{name} vs throughput (solid p50, dashed p99)")
    # Constrained layout makes room for a legend placed outside the axes, below them.
    fig.legend(loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(title)
    save(fig, out, dpi=110)
    return out
