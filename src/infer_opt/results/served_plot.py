"""Latency against achieved throughput, one curve per server: <run>.served.png.

For runs with served variants (engines/http). Each point is one ok online row (one arrival
rate); x = output tokens/s achieved, y = TTFT (left) and TPOT (right), p50 solid and p99
dashed, log scale. A curve is a server: a served variant is labelled by its variant (which
names the server and its policy), an in-process row by its policy and variant, so the own
server's continuous batching, llama.cpp's server slots and vLLM's scheduler sit beside the
in-process policies under the same arrivals. Needs matplotlib (extra `report`).
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path

from infer_opt.format.io import read_results
from infer_opt.results.served_table import twin_variant


def served_plot_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name.removesuffix(".csv") + ".served.png")


def curve_label(row: dict[str, str]) -> str:
    variant = row["variant"]
    if variant.startswith("served") or "+served" in variant or twin_variant(variant) is not None:
        return f"server: {variant}"
    return f"in-process {row.get('policy', '')}: {variant}"


def write_served_plot(csv_path: Path) -> Path | None:
    """Writes the plot beside the CSV; None without served online rows or matplotlib."""
    rows = [r for r in read_results(csv_path, with_samples=False).rows
            if r.get("workload") == "online" and r["status"] == "ok"
            and r.get("output_tokens_per_s")]
    if not any(curve_label(r).startswith("server:") for r in rows):
        return None
    if importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        curves[f"{curve_label(r)} · {r['arrival']}"].append(r)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (label, pts) in enumerate(sorted(curves.items())):
        pts.sort(key=lambda r: float(r["output_tokens_per_s"]))
        x = [float(r["output_tokens_per_s"]) for r in pts]
        for ax, metric in zip(axes, ("ttft_ms", "tpot_ms")):
            for stat, style in (("p50", "-"), ("p99", "--")):
                y = [float(r[f"{metric}_{stat}"]) if r.get(f"{metric}_{stat}") else float("nan")
                     for r in pts]
                ax.plot(x, y, style, marker="o", color=f"C{i % 10}",
                        label=label if ax is axes[0] and stat == "p50" else None)
    for ax, title in zip(axes, ("TTFT (ms)", "TPOT (ms)")):
        ax.set_xlabel("output tokens/s (achieved)")
        ax.set_ylabel(title)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{title} vs throughput (solid p50, dashed p99)")
    fig.legend(loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.suptitle(f"latency vs throughput per server ({rows[0]['model']}, {rows[0]['device']})")
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    out = served_plot_path(csv_path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out



