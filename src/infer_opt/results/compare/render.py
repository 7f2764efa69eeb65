"""A comparison as markdown: the header (which file is OLD, which NEW), one line per shown
metric, drift, the tests made, and the verdict."""

from __future__ import annotations

from infer_opt.format.columns import column
from infer_opt.results import estimate
from infer_opt.results.compare.verdict import (
    BELOW,
    DRIFT,
    NOT_GATED,
    REGRESSION,
    Comparison,
    pct,
)
from infer_opt.results.markdown import table


def _conf(c: float) -> str:
    return f"{c * 100:.4g}%"


def render(cmp: Comparison, show_all: bool = False) -> str:
    lines = [f"# compare: {cmp.title}", "", f"mode: {cmp.mode}", ""]
    for n in cmp.notes:
        lines.append(f"note: {n}")
    if cmp.notes:
        lines.append("")
    head = ["row", "metric", cmp.baseline_label, "new", "change", "interval", "method", "gate",
            "verdict"]
    body: list[list[str]] = []
    for r in cmp.rows:
        if r.note:
            body.append([r.label, "", "", "", "", "", "", "",
                         r.note + (" — REGRESSION (was ok)" if r.failed_now else "")])
            continue
        for m in r.metrics:
            if (not show_all and not column(m.metric).shown
                    and m.verdict in (NOT_GATED, BELOW, DRIFT)):
                continue
            ci = "" if m.ci is None else f"{pct(m.ci[0])}..{pct(m.ci[1])}"
            gate = "" if m.threshold is None else f"{m.threshold * 100:g}% ({m.better} better)"
            verdict = m.verdict.upper() if m.verdict == REGRESSION else m.verdict
            body.append([r.label, m.metric, f"{m.old:.4g}", f"{m.new:.4g}", pct(m.ratio), ci,
                         m.method.removeprefix("; "), gate, verdict])
    lines.append(table(head, body))
    if cmp.only_old:
        lines += ["", f"only in {cmp.baseline_label}: " + "; ".join(cmp.only_old)]
    if cmp.only_new:
        lines += ["", "only in new (no match): " + "; ".join(cmp.only_new)]
    lines += [""] + cmp.drift + [""] + [tests_line(cmp)]
    bad = cmp.regressed
    if bad:
        lines.append(f"REGRESSION in {len(bad)} of {len(cmp.rows)} rows:")
        for r in bad:
            if r.failed_now:
                lines.append(f"  {r.label}: was ok, now failed")
            for m in r.regressions:
                ci = "" if m.ci is None else (f", {_conf(cmp.confidence)} CI "
                                              f"{pct(m.ci[0])}..{pct(m.ci[1])}")
                gate = m.threshold or 0.0
                lines.append(f"  {r.label}: {m.metric} {pct(m.ratio)}{ci} (gate {gate * 100:g}%)")
    else:
        unjudged = (f"; {cmp.insufficient} metrics could not be judged (insufficient samples)"
                    if cmp.insufficient else "")
        lines.append(f"no regression in {len(cmp.rows)} matched rows (gate: the whole interval "
                     f"is worse than the threshold){unjudged}")
    return "\n".join(lines) + "\n"


def tests_line(cmp: Comparison) -> str:
    """How many tests were made and how the false-alarm rate is held across them."""
    m = cmp.tests_interval
    text = (f"tests: {m + cmp.tests_point + cmp.insufficient} gated row x metric tests; {m} with "
            f"bootstrap intervals")
    if m:
        text += (f", each at {_conf(cmp.confidence)} (Bonferroni: 1 - 5%/{m}, so all {m} hold "
                 f"together with 95% probability)")
    text += f"; {cmp.tests_point} on point values"
    if cmp.insufficient:
        text += (f"; {cmp.insufficient} with insufficient samples (fewer than "
                 f"{estimate.MIN_UNITS} timed runs per side): no verdict")
    return text
