"""Planning a run: everything a user can get wrong is checked here, before heavy work.

In order, each a one-line UserError (exit 2) with nothing written: the output directory can be
written, the device exists, every variant is a valid stack (core/stack.py) and every workload
fits it, `--variants` names variants of the suite; then the model is resolved (offline unless
downloads are allowed) and every workload is checked against the model's context.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from infer_opt.core.errors import UserError
from infer_opt.core.models import ModelRef
from infer_opt.core.stack import Stack, build_stack
from infer_opt.run.cell import Cell
from infer_opt.run.rounds import Job
from infer_opt.run.suite import Suite


def check_out_dir(out_dir: Path) -> None:
    """`out_dir` is (or can become) a directory this process can write; a real write is tried
    (permission bits say nothing of read-only mounts, or of root), and whatever the probe
    created is removed again."""
    missing: list[Path] = []
    probe = out_dir
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    if not probe.is_dir():
        raise UserError("--out", f"{str(probe)!r} is a file, not a directory")
    try:
        for d in reversed(missing):
            d.mkdir()
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise UserError("--out", f"cannot write in {str(out_dir)!r}: "
                                 f"{exc.strerror or exc}") from None
    finally:
        for d in missing:  # deepest first: leave no trace of the probe
            if d.is_dir():
                d.rmdir()


def resolve_device(device: str) -> str:
    """'auto' -> cuda when torch sees a GPU, else cpu; 'cuda' without one is refused."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise UserError("device", f"{device!r} is not one of auto, cpu, cuda")
    if device == "cpu":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda" if device == "auto" else device
    if device == "auto":
        return "cpu"
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    raise UserError("device", f"{device!r} requested but torch {torch.__version__} ({build}) "
                              "sees no CUDA device here; use device = \"cpu\" or \"auto\"")


def thread_warning(threads: int) -> str | None:
    cores = os.cpu_count() or 1
    if threads > cores:
        return (f"warning: threads = {threads} exceeds this machine's {cores} cores: threads "
                "will compete for cores and timings will be noisy")
    return None


def validate_stacks(suite: Suite, device: str, variants_filter: list[str] | None = None,
                    model: str | None = None) -> dict[str, Stack]:
    """Every variant of the suite as a validated stack, each workload checked against it;
    `model`: the model the run uses (default: the suite's)."""
    stacks: dict[str, Stack] = {}
    for group in suite.groups:
        for variant in group.variants:
            if variant not in stacks:
                stacks[variant] = build_stack(variant, device, model or suite.model)
            for w in group.workloads:
                check_fit(stacks[variant], w, f"group {group.name}")
    if variants_filter is not None:
        unknown = [v for v in variants_filter if v not in stacks]
        if unknown:
            raise UserError("--variants", f"{unknown[0]!r} is not a variant of suite "
                                          f"{suite.name}; its variants: {', '.join(stacks)}")
    return stacks


def new_run_id(suite_name: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{suite_name}-{secrets.token_hex(2)}"


def check_fit(stack: Stack, w: Any, where: str) -> None:
    """A workload the stack can serve as declared, or a one-line UserError."""
    engine, variant = stack.engine, stack.variant
    if w.needs_step_api and not engine.step_api and not engine.serves_requests:
        raise UserError(where, f"the {w.kind} workload drives the suite's decode loop; engine "
                               f"{engine.name} ({variant!r}) schedules requests itself: run it "
                               "in a static-batch group")
    if getattr(w, "needs_row_ops", False) and not engine.row_ops and not engine.serves_requests:
        raise UserError(where, f"the {w.kind} workload joins rows of different lengths in one "
                               f"batch; engine {engine.name} ({variant!r}) cannot: run it in a "
                               "static-batch group")
    bs = getattr(w, "batch_size", 1)
    if engine.max_batch_size is not None and bs > engine.max_batch_size:
        raise UserError(where, f"engine {engine.name} serves batches of at most "
                               f"{engine.max_batch_size}; {variant!r} has batch_size {bs}")
    if stack.settings.decoder is not None and not w.uses_generate:
        by = stack.settings.owners.get("decoder", "a plugin")
        raise UserError(where, f"{by!r} in {variant!r} replaces whole-sequence generation; the "
                               f"{w.kind} workload decodes rows step by step: use a "
                               "static-batch group")
    for p in stack.plugins:
        if p.max_batch_size is not None and bs > p.max_batch_size:
            raise UserError(where, f"{p.name!r} serves batches of at most {p.max_batch_size}; "
                                   f"{variant!r} has batch_size {bs}")


def plan_cells(suite: Suite, run_id: str, ref: ModelRef, device: str, bandwidth: float,
               variants_filter: list[str] | None = None) -> list[Cell]:
    """Every cell of the run; a stack or workload that cannot run raises UserError first."""
    stacks = validate_stacks(suite, device, variants_filter, ref.name)
    for group in suite.groups:
        for w in group.workloads:
            w.validate(ref.max_context)
    metric_columns = sorted({m.name for s in stacks.values() for m in s.metrics})
    cells: list[Cell] = []
    # Workload-major: the variants of one workload sit together, as the rounds measure them.
    for group in suite.groups:
        for w in group.workloads:
            for variant in group.variants:
                if variants_filter is not None and variant not in variants_filter:
                    continue
                cells.append(Cell(run_id=run_id, suite=suite.name, index=len(cells),
                                  model=asdict(ref), variant=variant, workload=w.to_dict(),
                                  device=device, threads=suite.threads,
                                  bandwidth_gb_per_s=bandwidth, seed=suite.seed,
                                  group=group.name, metric_columns=metric_columns))
    if not cells:
        raise UserError("--variants", "no cell left to run after filtering")
    return cells


def plan_jobs(suite: Suite, cells: list[Cell], idle: set[str] = frozenset()) -> list[Job]:
    """One job per group, or per chunk of `max_workers` of its variants: the variants of a job
    are loaded side by side and measured in interleaved rounds (run/rounds.py). Variants in
    `idle` (skipped here: no CUDA, a missing package) load nothing and do not count."""
    jobs: list[Job] = []
    for group in dict.fromkeys(c.group for c in cells):
        mine = [c for c in cells if c.group == group]
        variants = list(dict.fromkeys(c.variant for c in mine))
        loaded = [v for v in variants if v not in idle]
        chunks = [set(loaded[i:i + suite.max_workers])
                  for i in range(0, len(loaded), suite.max_workers)] or [set()]
        chunks[0] |= {v for v in variants if v in idle}
        for chunk in chunks:
            jobs.append(Job([c for c in mine if c.variant in chunk], suite.timeout_s, suite.seed))
    return jobs
