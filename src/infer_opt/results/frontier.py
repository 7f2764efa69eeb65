"""The decode frontier: per workload, the fastest row within each fidelity level.

A user picking a runtime asks "what is the fastest thing that still answers like the model?".
For each static-batch workload (model, prompt and output length, batch size) and each level of
KL(baseline || variant) (<= 1e-3, <= 1e-2, any), the table names the ok row with the highest
decode tokens/s, its engine, and its ratios to two rows users know: `kv-cache+sdpa` (what
transformers' generate does) and llama.cpp (engine `llamacpp`, variant `llamacpp`) when the run
has it. When the fastest row of a level is another runtime (llama.cpp, OpenVINO, ...), the line
below it gives the fastest torch / ONNX Runtime stack, the suite's own. Rows without a KL (no
fidelity measured) are not ranked; the section says which.

The plot (report.py) draws decode tokens/s against KL on a log axis, one panel per workload,
with the frontier as a step line: the best speed available at each fidelity or better. KL 0
(the baseline against itself) cannot sit on a log axis: such points are drawn at KL_FLOOR.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from infer_opt.format.io import parse_number as _num
from infer_opt.results.markdown import table

LEVELS = ((1e-3, "KL <= 1e-3"), (1e-2, "KL <= 1e-2"), (math.inf, "any KL"))
HF_VARIANT = "kv-cache+sdpa"  # transformers' generate: dynamic cache, SDPA attention
LLAMACPP = "llamacpp"  # the llama.cpp engine: its plain variant, else its fastest ok row
OWN_ENGINES = ("torch", "ort", "ort-genai")  # the suite's own stacks
KL_FLOOR = 1e-12


def _workload(r: dict[str, str]) -> tuple[str, ...]:
    return (r.get("model", ""), r.get("prompt_tokens", ""), r.get("new_tokens", ""),
            r.get("batch_size", ""), r.get("depth_tokens", ""))


def frontier_groups(rows: list[dict[str, str]]
                    ) -> dict[tuple[str, ...], list[tuple[float, float, dict[str, str]]]]:
    """Ok static-batch rows with a KL and a decode speed, as (tok/s, KL, row) per workload."""
    groups: dict[tuple[str, ...], list[tuple[float, float, dict[str, str]]]] = {}
    for r in rows:
        if r.get("status") != "ok" or r.get("workload", "static-batch") != "static-batch":
            continue
        tps, kl = _num(r.get("decode_tokens_per_s")), _num(r.get("kl_mean"))
        if tps is None or kl is None or not math.isfinite(kl):
            continue
        groups.setdefault(_workload(r), []).append((tps, kl, r))
    return groups


def fastest(items: list[tuple[float, float, dict[str, str]]], limit: float,
            engines: tuple[str, ...] | None = None) -> tuple[float, float, dict[str, str]] | None:
    """The fastest item with KL <= limit (and an engine in `engines`, when given)."""
    ok = [x for x in items if x[1] <= limit and (engines is None or x[2].get("engine") in engines)]
    return max(ok, key=lambda x: (x[0], -x[1])) if ok else None


def front(items: list[tuple[float, float, dict[str, str]]]) -> list[tuple[float, float]]:
    """The frontier's corners, by increasing KL: each point is faster than every point with
    KL at or below its own."""
    out: list[tuple[float, float]] = []
    for tps, kl, _ in sorted(items, key=lambda x: (x[1], -x[0])):
        if not out or tps > out[-1][0]:
            out.append((tps, kl))
    return out


def _reference(rows: list[dict[str, str]], key: tuple[str, ...], variant: str
               ) -> dict[str, str] | None:
    return next((r for r in rows if r.get("variant") == variant and r.get("status") == "ok"
                 and r.get("workload", "static-batch") == "static-batch"
                 and _workload(r) == key), None)


def _fastest_of_engine(rows: list[dict[str, str]], key: tuple[str, ...], engine: str
                       ) -> dict[str, str] | None:
    """The fastest ok static-batch row of `engine` on this workload (a variant with options)."""
    mine = [r for r in rows if r.get("engine") == engine and r.get("status") == "ok"
            and r.get("workload", "static-batch") == "static-batch" and _workload(r) == key
            and _num(r.get("decode_tokens_per_s"))]
    return max(mine, key=lambda r: _num(r.get("decode_tokens_per_s")) or 0.0, default=None)


def _ratio(a: Any, b: Any) -> str:
    x, y = _num(a), _num(b)
    return "" if x is None or not y else f"{x / y:.2f}x"


def _tps(r: dict[str, str]) -> str:
    v = _num(r.get("decode_tokens_per_s"))
    lo, hi = _num(r.get("decode_tokens_per_s_ci_low")), _num(r.get("decode_tokens_per_s_ci_high"))
    text = "" if v is None else f"{v:.1f}"
    return text + (f" [{lo:.1f}, {hi:.1f}]" if lo is not None and hi is not None else "")


def _kl(v: Any) -> str:
    x = _num(v)
    return "" if x is None else f"{x:.2g}"


def render_frontier(rows: list[dict[str, str]]) -> str:
    """Markdown: per workload, the fastest row per fidelity level ('' without KL columns)."""
    groups = frontier_groups(rows)
    if not groups:
        return ""
    out = ["## Decode frontier (fastest row per fidelity level)", "",
           "KL = KL(baseline || variant) mean, nats; tok/s = decode tokens/s, median [95% "
           "bootstrap interval]; n = timed runs. `vs kv-cache+sdpa`: what transformers' "
           "generate gives; `vs llamacpp`: the llama.cpp row of the same workload. "
           "(own) = the fastest torch / ONNX Runtime stack where another runtime leads.", ""]
    for key, items in groups.items():
        model, prompt, new, bs, depth = key
        hf = _reference(rows, key, HF_VARIANT)
        llama = _reference(rows, key, LLAMACPP) or _fastest_of_engine(rows, key, LLAMACPP)
        out.append(f"{model}, bs {bs}, prompt {prompt}, new {new}"
                   + (f", depth {depth}" if depth not in ("", "0") else "")
                   + (f"; llamacpp: {_tps(llama)} tok/s, TTFT {_num(llama.get('ttft_ms_p50')) or 0:.0f} ms"
                      if llama else "; no llamacpp row"))
        out.append("")
        head = ["fidelity", "variant", "engine", "n", "decode tok/s", "TTFT p50 ms", "KL mean",
                f"vs {HF_VARIANT}", "vs llamacpp", "TTFT vs llamacpp"]
        body: list[list[str]] = []
        for limit, label in LEVELS:
            best = fastest(items, limit)
            picks = [(label, best)]
            if best is not None and best[2].get("engine") not in OWN_ENGINES:
                picks.append((f"{label} (own)", fastest(items, limit, OWN_ENGINES)))
            for name, pick in picks:
                if pick is None:
                    body.append([name, "none"] + [""] * (len(head) - 2))
                    continue
                r = pick[2]
                body.append([
                    name, r["variant"], r.get("engine", ""),
                    r.get("timed_runs") or r.get("repeats") or "", _tps(r),
                    f"{_num(r.get('ttft_ms_p50')) or 0:.1f}", _kl(r.get("kl_mean")),
                    _ratio(r.get("decode_tokens_per_s"), hf and hf.get("decode_tokens_per_s")),
                    _ratio(r.get("decode_tokens_per_s"),
                           llama and llama.get("decode_tokens_per_s")),
                    _ratio(r.get("ttft_ms_p50"), llama and llama.get("ttft_ms_p50"))])
        out += [table(head, body), ""]
    unranked = sorted({r["variant"] for r in rows if r.get("status") == "ok"
                       and r.get("workload", "static-batch") == "static-batch"
                       and _num(r.get("kl_mean")) is None})
    if unranked:
        out += [f"Not ranked (no KL measured): {', '.join(unranked)}", ""]
    return "\n".join(out)


def plot_frontier(rows: list[dict[str, str]], path: Path) -> bool:
    """Decode tok/s against KL (log x), one panel per workload, frontier as a step line."""
    groups = {k: v for k, v in frontier_groups(rows).items() if len(v) >= 2}
    if not groups:
        return False
    from infer_opt.results.plots import figure, label_points, save

    fig, axes = figure(1, len(groups), figsize=(8.5 * len(groups), 5.5))
    for ax, (key, items) in zip(axes[0], groups.items()):
        model, prompt, new, bs, _depth = key
        labels = []
        for tps, kl, r in items:
            x = max(kl, KL_FLOOR)
            own = r.get("engine") in OWN_ENGINES
            color = ("tab:red" if r.get("engine") == LLAMACPP else
                     "tab:green" if r["variant"] == HF_VARIANT else
                     "tab:blue" if own else "tab:orange")
            ax.scatter([x], [tps], color=color, zorder=3, s=28)
            labels.append((x, tps, r["variant"]))
        corners = front(items)
        xs, ys = [], []
        for tps, kl in corners:
            x = max(kl, KL_FLOOR)
            if ys:  # step: the previous speed holds until this fidelity is reached
                xs.append(x)
                ys.append(ys[-1])
            xs.append(x)
            ys.append(tps)
        right = max(max(kl for _, kl, _ in items) * 10, 1.0)
        xs.append(right)
        ys.append(ys[-1])
        ax.plot(xs, ys, color="black", lw=1.2, alpha=0.7, zorder=2, label="frontier")
        ax.set_xscale("log")
        ax.set_xlim(KL_FLOOR / 3, right)
        ax.set_ylim(0, max(tps for tps, _, _ in items) * 1.15)
        for limit, label in LEVELS[:-1]:
            ax.axvline(limit, color="gray", ls=":", lw=0.8)
            ax.text(limit, ax.get_ylim()[1] * 0.98, f"{label} ", fontsize=7, va="top",
                    ha="right", rotation=90, color="gray")
        ax.set_xlabel(f"KL(baseline || variant), nats, log scale (KL below {KL_FLOOR:g}, "
                      f"including 0, drawn at {KL_FLOOR:g})")
        ax.set_ylabel("decode tokens/s (higher is better)")
        ax.set_title(f"{model}, bs {bs}, prompt {prompt}, new {new}\nred llamacpp, green "
                     f"{HF_VARIANT}, blue torch/ORT, orange other runtimes", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        # After the limits are final: near KL = 0 many rows share x, labels are stacked apart.
        label_points(ax, labels)
    save(fig, path)
    return True
