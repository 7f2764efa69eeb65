"""Planning a run: everything a user can get wrong is checked here, before heavy work.

In order, each a one-line UserError (exit 2) with nothing written: the suite file itself
(run/suite.py: every key, NaN, duplicates, references, ceilings), the output directory can be
written, the device exists, every variant is a valid stack (core/stack.py) and every workload
fits it, `--variants` names variants of the suite; then the model is resolved and its folder
checked (core/models.py: config, custom code, safetensors headers; offline unless downloads
are allowed) and every workload and plugin is checked against the model's config
(`check_against_model`). `run` and `sweep` go through the same checks.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from infer_opt.core.errors import UserError
from infer_opt.core.models import ModelRef
from infer_opt.core.stack import Stack, run_stack
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


def cli_strings(model: str | None, variants: str | None) -> list[str] | None:
    """`--model` and `--variants` as given on a command line (run, sweep): an empty one is bad
    input, not "use the default"; returns the variant list (None: all of the suite's)."""
    if model is not None and not model.strip():
        raise UserError("--model", "is empty; give a model name or leave the option out")
    if variants is None:
        return None
    wanted = [v.strip() for v in variants.split(",")]
    if not all(wanted):
        raise UserError("--variants", f"{variants!r} has an empty entry; give variant strings "
                                      "separated by commas")
    return wanted


def thread_warning(threads: int) -> str | None:
    cores = os.cpu_count() or 1
    if threads > cores:
        return (f"warning: threads = {threads} exceeds this machine's {cores} cores: threads "
                "will compete for cores and timings will be noisy")
    return None


def validate_stacks(suite: Suite, device: str, variants_filter: list[str] | None = None,
                    model: str | None = None) -> dict[str, Stack]:
    """Every variant of the suite as a validated stack, each workload checked against it;
    `model`: the model the run uses (default: the suite's). A variant whose plugin raised while
    its stack was built is kept, unchecked, with `failed` set: its rows fail, the rest run."""
    stacks: dict[str, Stack] = {}
    for group in suite.groups:
        for variant in group.variants:
            if variant not in stacks:
                stacks[variant] = run_stack(variant, device, model or suite.model,
                                            suite.engine_defaults)
            if stacks[variant].failed is not None:
                continue
            for w in group.workloads:
                check_fit(stacks[variant], w, f"group {group.name}")
    _check_defaults_used(suite, stacks)
    if variants_filter is not None:
        unknown = [v for v in variants_filter if v not in stacks]
        if unknown:
            raise UserError("--variants", f"{unknown[0]!r} is not a variant of suite "
                                          f"{suite.name}; its variants: {', '.join(stacks)}")
    return stacks


def _check_defaults_used(suite: Suite, stacks: dict[str, Stack]) -> None:
    """A header default no variant takes (an endpoint without a served[server=endpoint]
    variant) is a suite that does not do what it says: refused."""
    from infer_opt.core.stack import SUITE
    from infer_opt.run.suite import SERVED_DEFAULTS

    for key, option in SERVED_DEFAULTS.items():
        if getattr(suite, key) and not any(s.settings.owners.get(f"option {option}") == SUITE
                                           for s in stacks.values()):
            raise UserError(f"{suite.path}: {key}",
                            f"applies to served[server=endpoint] variants, and this suite's "
                            f"variants do not take it (none is served[server=endpoint] without "
                            f"its own {option}); add one, e.g. \"served[server=endpoint]\"")


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
    if (getattr(w, "needs_row_ops", False) and not engine.has_row_ops(stack.settings)
            and not engine.serves_requests):
        raise UserError(where, f"the {w.kind} workload joins rows of different lengths in one "
                               f"batch; engine {engine.name} ({variant!r}) cannot: run it in a "
                               "static-batch group")
    if engine.serves_requests and getattr(w, "prefix_reuse", False):
        raise UserError(f"{where}: prefix_reuse", f"must be false for {variant!r}: reuse copies "
                                                  "the prefix's KV cache in process, and a "
                                                  "served variant's prefix caching is its "
                                                  "server's own (allowed: false)")
    unfit = getattr(w, "unfit_reason", None)  # the workload's own demands (a depth)
    why = unfit(stack) if unfit is not None else None
    if why:
        raise UserError(where, why)
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


def check_against_model(suite: Suite, stacks: dict[str, Stack], ref: ModelRef) -> None:
    """What only the resolved model can refute, before any worker starts: every workload fits
    its context, and every plugin's values fit its shape (Plugin.check_model: layers, ...)."""
    from infer_opt.core.models import model_config

    for group in suite.groups:
        for w in group.workloads:
            w.validate(ref.max_context)
    if not ref.has_tokenizer and ref.vocab_size < 2:
        # Without a tokenizer the prompts are seeded random ids below vocab_size.
        raise UserError("model", f"{ref.name} has no tokenizer and its config gives no usable "
                                 f"vocab_size ({ref.vocab_size})")
    config = model_config(ref)
    for variant, stack in stacks.items():
        for p in stack.plugins:
            why = p.check_model(config)
            if why is not None:
                raise UserError("variant", f"{p.name!r} in {variant!r} does not fit model "
                                           f"{ref.name}: {why}")


def plan_cells(suite: Suite, run_id: str, ref: ModelRef, device: str, bandwidth: float,
               variants_filter: list[str] | None = None) -> list[Cell]:
    """Every cell of the run; a stack or workload that cannot run raises UserError first."""
    stacks = validate_stacks(suite, device, variants_filter, ref.name)
    check_against_model(suite, stacks, ref)
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
                                  group=group.name, metric_columns=metric_columns,
                                  engine_defaults=suite.engine_defaults))
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
            cells_of = [replace(c, job=len(jobs)) for c in mine if c.variant in chunk]
            jobs.append(Job(cells_of, suite.timeout_s, suite.seed))
    return jobs
