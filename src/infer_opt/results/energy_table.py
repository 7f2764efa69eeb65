"""The table's energy section: joules per output token and the GPU state each row ran at, for
the rows that have them (core/energy.py fills the columns; absent on machines without a
counter, where the section is left out)."""

from __future__ import annotations

from infer_opt.format.io import parse_number as _num

COLUMNS = [("energy_j_per_output_token", "J / out token", 4),
           ("output_tokens_per_j", "out tokens / J", 1), ("power_w_mean", "mean W", 1),
           ("gpu_sm_clock_mhz_min", "SM MHz min", 0), ("gpu_mem_clock_mhz_min", "mem MHz min", 0),
           ("gpu_power_draw_w_max", "draw W max", 1), ("gpu_power_limit_w", "limit W", 0),
           ("gpu_temp_c_max", "temp C max", 0)]


def _label(r: dict[str, str]) -> str:
    if r.get("workload") == "online":
        return f"online {r.get('policy', '')} n={r.get('num_requests', '')}"
    return f"bs{r.get('batch_size', '')} p{r.get('prompt_tokens', '')}/n{r.get('new_tokens', '')}"


def render_energy(rows: list[dict[str, str]]) -> str:
    keys = [c for c, _, _ in COLUMNS] + ["gpu_throttle_reasons"]
    mine = [r for r in rows if r.get("status") == "ok" and any(r.get(k) for k in keys)]
    if not mine:
        return ""
    method = sorted({r.get("energy_method", "") for r in mine} - {""})
    head = ["variant", "workload", *[h for _, h, _ in COLUMNS], "throttle reasons"]
    out = ["## Energy and GPU state\n",
           f"Energy over the timed runs only ({', '.join(method) or 'no counter'}), median over "
           "runs; GPU state: the worst reading after any timed run.\n",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in mine:
        cells = []
        for col, _, digits in COLUMNS:
            v = _num(r.get(col))
            cells.append("" if v is None else f"{v:.{digits}f}")
        out.append("| " + " | ".join([r["variant"], _label(r), *cells,
                                      r.get("gpu_throttle_reasons", "")]) + " |")
    return "\n".join(out) + "\n"
