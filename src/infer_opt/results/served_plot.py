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
from infer_opt.results.serving_plot import draw_latency_curves


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
    curves: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        curves[f"{curve_label(r)} · {r['arrival']}"].append(r)
    title = f"latency vs throughput per server ({rows[0]['model']}, {rows[0]['device']})"
    return draw_latency_curves(curves, title, served_plot_path(csv_path))
