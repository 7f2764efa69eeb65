"""Decode speed and KV memory against context depth, one curve per variant: <run>.depth.png.

Each point is one ok static-batch row; x = depth_tokens (context already in the KV cache when
the timed run starts). Left: decode tokens/s (median over timed runs, with its 95% interval
as an error bar); right: KV MB the cache held (kv_used_mb). A variant (and batch size) needs
two or more depths to make a curve. Needs matplotlib (extra `report`); without it no plot.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path

from infer_opt.format.io import parse_number, read_results


def plot_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name.removesuffix(".csv") + ".depth.png")


def curves(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Ok static rows grouped by variant and batch size, sorted by depth; curves of one point
    are left out."""
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        if (r.get("status") == "ok" and r.get("workload") == "static-batch"
                and parse_number(r.get("depth_tokens")) is not None
                and parse_number(r.get("decode_tokens_per_s")) is not None):
            out[f"{r['variant']} bs{r['batch_size']}"].append(r)
    return {k: sorted(v, key=lambda r: float(r["depth_tokens"]))
            for k, v in sorted(out.items())
            if len({r["depth_tokens"] for r in v}) >= 2}


def write_plot(csv_path: Path) -> Path | None:
    """The plot beside the CSV; None without two depths of one variant, or without matplotlib."""
    found = curves(read_results(csv_path, with_samples=False).rows)
    if not found or importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (speed, memory) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (label, pts) in enumerate(found.items()):
        color = f"C{i % 10}"
        x = [float(r["depth_tokens"]) for r in pts]
        y = [float(r["decode_tokens_per_s"]) for r in pts]
        lo = [parse_number(r.get("decode_tokens_per_s_ci_low")) for r in pts]
        hi = [parse_number(r.get("decode_tokens_per_s_ci_high")) for r in pts]
        err = [[v - (a if a is not None else v) for v, a in zip(y, lo)],
               [(b if b is not None else v) - v for v, b in zip(y, hi)]]
        speed.errorbar(x, y, yerr=err, marker="o", color=color, capsize=3, label=label)
        kv = [(xx, parse_number(r.get("kv_used_mb"))) for xx, r in zip(x, pts)]
        kv = [(a, b) for a, b in kv if b is not None]
        if kv:
            memory.plot([a for a, _ in kv], [b for _, b in kv], marker="o", color=color)
    speed.set_ylabel("decode tokens/s (median, 95% CI)")
    memory.set_ylabel("KV cache MB (used)")
    for ax in (speed, memory):
        ax.set_xlabel("depth: context tokens already in the KV cache")
        ax.grid(True, alpha=0.3)
    speed.set_title("decode speed vs depth")
    memory.set_title("KV memory vs depth")
    fig.legend(loc="lower center", ncol=3, fontsize=7, frameon=False)
    first = next(iter(found.values()))[0]
    fig.suptitle(f"long context ({first['model']}, {first['device']})")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    out = plot_path(csv_path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def report_section(csv_path: Path) -> list[str]:
    """The report's lines for the plot (written here), or none when there is nothing to plot."""
    path = write_plot(csv_path)
    if path is None:
        return []
    return ["## Decode speed and KV memory vs depth", "",
            "One curve per variant and batch size: decode tokens/s and KV MB used against the "
            "context already cached when the timed run starts (`depth_tokens`).", "",
            f"![depth]({path.name})", ""]
